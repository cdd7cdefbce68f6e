// Headless Debian Chromium driven by playwright-core, with the flags of
// shared/docs/testing-on-loopback.md: loopback ICE candidates, a fake camera and microphone,
// no background traffic. Chromium is installed with apt when missing (root), or the test
// fails saying why: never a silent skip.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';
import { startStatic } from './static.js';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export const CHROMIUM_FLAGS = [
  '--allow-loopback-in-peer-connection',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Remote audio may start without a click in tests (the demo page gets its click).
  '--autoplay-policy=no-user-gesture-required',
];

/** Makes sure Chromium is there: installs Debian's `chromium` when missing and we are root. */
export function ensureChromium() {
  if (existsSync(CHROMIUM)) return CHROMIUM;
  if (process.env.CHROMIUM_PATH) {
    throw new Error(`CHROMIUM_PATH=${CHROMIUM} does not exist`);
  }
  if (typeof process.getuid === 'function' && process.getuid() === 0) {
    console.error('# chromium missing: installing Debian package `chromium` with apt-get');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    execFileSync('apt-get', ['update'], { stdio: 'inherit', env });
    execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'chromium'], { stdio: 'inherit', env });
    if (existsSync(CHROMIUM)) return CHROMIUM;
  }
  throw new Error(
    `Chromium not found at ${CHROMIUM} and could not be installed (needs root for apt-get): ` +
      'run `apt-get install chromium` (or scripts/install-deps.sh), or set CHROMIUM_PATH',
  );
}

/** Launches Chromium with a fresh profile. `close()` also removes the profile. */
export async function launchChromium() {
  const executablePath = ensureChromium();
  const userDataDir = mkdtempSync(join(tmpdir(), 'wilddog-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: CHROMIUM_FLAGS,
    ignoreDefaultArgs: ['--mute-audio'],
    viewport: { width: 1280, height: 800 },
  });
  const pages = await startStatic();
  return {
    context,
    /** The tests' own page server (lib/static.js). */
    pages,
    async newPage() {
      const page = await context.newPage();
      page.on('pageerror', (e) => console.error(`# pageerror: ${e.message}`));
      page.on('console', (m) => {
        if (process.env.WILDDOG_TEST_VERBOSE || (m.type() === 'error' && !m.text().startsWith('Failed to load resource'))) console.error(`# console.${m.type()}: ${m.text()}`);
      });
      return page;
    },
    async close() {
      await context.close().catch(() => {});
      await pages.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}
