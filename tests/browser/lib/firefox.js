// Headless Firefox ESR (Debian `firefox-esr`) driven by npm puppeteer-core 24 over WebDriver
// BiDi, no browser download (shared/docs/testing-on-loopback.md, fact 7): a fresh profile with
// a fake camera and microphone that count as capturing, and loopback ICE candidates. Pages
// get the small part of Playwright's Page API that lib/sdk-page.js uses, so the same SDK test
// page runs in both browsers. Firefox is installed with apt when missing (root), or the test
// fails saying why.
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import puppeteer from 'puppeteer-core';
import { startStatic } from './static.js';

export const FIREFOX = process.env.FIREFOX_PATH || '/usr/bin/firefox-esr';

const PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  // Without these two, fake devices do not count as capturing and ICE gathers only the
  // default route's address, which a loopback-only namespace lacks.
  'permissions.default.camera': 1,
  'permissions.default.microphone': 1,
  'media.peerconnection.ice.loopback': true,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
};

/** Makes sure Firefox ESR is there: installs Debian's `firefox-esr` when missing and we are root. */
export function ensureFirefox() {
  if (existsSync(FIREFOX)) return FIREFOX;
  if (process.env.FIREFOX_PATH) throw new Error(`FIREFOX_PATH=${FIREFOX} does not exist`);
  if (typeof process.getuid === 'function' && process.getuid() === 0) {
    console.error('# firefox-esr missing: installing it with apt-get');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    execFileSync('apt-get', ['update'], { stdio: 'inherit', env });
    execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'firefox-esr'], { stdio: 'inherit', env });
    if (existsSync(FIREFOX)) return FIREFOX;
  }
  throw new Error(`Firefox ESR not found at ${FIREFOX}: run \`apt-get install firefox-esr\` (or scripts/install-deps.sh), or set FIREFOX_PATH`);
}

/** A puppeteer page with Playwright's signatures for what the tests call. */
function adapt(page) {
  return {
    raw: page,
    goto: (url) => page.goto(url),
    evaluate: (fn, arg) => page.evaluate(fn, arg),
    waitForFunction: async (fn, arg, opts = {}) => page.waitForFunction(fn, { timeout: opts.timeout, polling: opts.polling }, arg),
    bringToFront: () => page.bringToFront(),
    on: (event, fn) => page.on(event, fn),
    close: () => page.close(),
  };
}

/** Launches Firefox ESR with a fresh profile; same shape as launchChromium(). */
export async function launchFirefox() {
  const executablePath = ensureFirefox();
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath,
    headless: true,
    protocol: 'webDriverBiDi',
    extraPrefsFirefox: PREFS,
  });
  const pages = await startStatic();
  return {
    browser,
    pages,
    async newPage() {
      const page = await browser.newPage();
      page.on('pageerror', (e) => console.error(`# firefox pageerror: ${e.message}`));
      page.on('console', (m) => {
        if (process.env.WILDDOG_TEST_VERBOSE || m.type() === 'error') console.error(`# firefox console.${m.type()}: ${m.text()}`);
      });
      return adapt(page);
    },
    async close() {
      await browser.close().catch(() => {});
      await pages.close();
    },
  };
}
