"""Flavors: teach nbserve a new kind of model (``from nbserve import flavors``).

    from nbserve.flavors import Flavor, register_flavor
    register_flavor(Flavor("catboost", "bentoml.catboost",
                           lambda m: type(m).__module__.startswith("catboost")), first=True)

A package can register one from an entry point in the ``nbserve.flavors`` group instead.
The implementation is ``nbserve._flavors``; this module is its public face.
"""

from ._flavors import Flavor, PipelineFlavor, PyTorchFlavor, flavor_for, register_flavor

__all__ = ["Flavor", "PipelineFlavor", "PyTorchFlavor", "flavor_for", "register_flavor"]
