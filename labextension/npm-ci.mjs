// The build hook (hatch-jupyter-builder's npm_builder) runs `<npm> install` then
// `<npm> run <build_cmd>`. This wrapper turns the install into `npm ci`, so every build
// installs exactly what the committed package-lock.json says; anything else goes to npm.
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const command = args[0] === 'install' && args.length === 1 ? ['ci', '--no-audit', '--no-fund'] : args;
const result = spawnSync('npm', command, { stdio: 'inherit', shell: process.platform === 'win32' });
process.exit(result.status ?? 1);
