"""Print the agent's OpenAPI document: ``python -m nbserve._agent.openapi > docs/openapi.json``."""

import json

from ._app import openapi_document

if __name__ == "__main__":
    print(json.dumps(openapi_document(), indent=2, sort_keys=True))
