// Where tests keep their screenshots. A test run must not modify tracked files, so by default
// they go to a directory of their own under the system's temp dir (printed, kept after the
// run to look at); WILDDOG_UPDATE_SCREENSHOTS=1 writes them to docs/screenshots/ instead (the
// committed ones the docs show). WILDDOG_SCREENSHOT_DIR chooses another directory.
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './server.js';

export function screenshotDir() {
  if (process.env.WILDDOG_UPDATE_SCREENSHOTS === '1') return join(REPO, 'docs', 'screenshots');
  return process.env.WILDDOG_SCREENSHOT_DIR || join(tmpdir(), 'wilddog-browser-screenshots');
}

/** The path to save screenshot `name` (e.g. `demo.png`) at; creates its directory. */
export function screenshotPath(name) {
  const dir = screenshotDir();
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  console.error(`# screenshot: ${path}`);
  return path;
}
