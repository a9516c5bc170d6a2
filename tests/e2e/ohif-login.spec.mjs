// OHIF with login, in headless Chromium: `dicomweb serve --viewer --oidc-issuer … 
// --viewer-oidc-client-id …` against a real OpenID provider (npm oidc-provider).
//
// Configuration: JSON in OHIF_E2E (or the first argument):
//   url        the viewer, e.g. http://127.0.0.1:8042/
//   issuer     the OpenID provider (its login form is on this origin)
//   users      [{login, studies: [{uid, patientName}], hidden: {uid, patientName}}]: each
//              signs in through the login form, must see exactly `studies` in the list, opens
//              the first and sees an image, and gets nothing of `hidden` by its URL
//   share      {url, study: {uid, patientName}}: a share link (`viewer_url`) opened without
//              signing in must show the study's image
//   chromium, artifacts  as in ohif.spec.mjs
// Every DICOMweb request must carry `Authorization: Bearer …`; no token is written to the
// report or the log.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  dismissBanner, listedNames, nameMatches, rowsLocator, showsImage, skipTour, canvasStats,
  waitForImages,
} from './viewport.mjs';

const config = JSON.parse(process.env.OHIF_E2E || process.argv[2] || '{}');
const viewerUrl = new URL(config.url || 'http://127.0.0.1:8042/');
const issuer = new URL(config.issuer);
const artifacts = path.resolve(config.artifacts || 'artifacts/e2e-login');
fs.mkdirSync(artifacts, { recursive: true });

const started = Date.now();
const seconds = () => ((Date.now() - started) / 1000).toFixed(1);
const log = (...args) => console.log(`[${seconds()} s]`, ...args);
const report = { passed: false, steps: [], dicomweb: [], pageErrors: [] };
const step = (name, detail = {}) => {
  report.steps.push({ name, at: Number(seconds()), ...detail });
  log('ok:', name, Object.keys(detail).length ? JSON.stringify(detail) : '');
};
function check(condition, message) {
  if (!condition) throw new Error(message);
}
const isDicomweb = url => url.startsWith(viewerUrl.origin + '/dicomweb');
const short = url => decodeURIComponent(url.replace(viewerUrl.origin, ''));

/** A fresh browser profile (no session shared between users); its DICOMweb traffic logged. */
async function newBrowser(name) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ohif-login-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: config.chromium || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 900 },
  });
  context.setDefaultTimeout(30000);
  const traffic = [];
  context.on('response', async response => {
    const url = response.url();
    if (!isDicomweb(url)) return;
    const headers = await response.request().allHeaders().catch(() => ({}));
    const entry = { who: name, method: response.request().method(), url: short(url),
      status: response.status(), bearer: /^Bearer \S+$/.test(headers.authorization || '') };
    traffic.push(entry);
    report.dicomweb.push(entry);
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', error => report.pageErrors.push(`${name}: ${String(error).slice(0, 300)}`));
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, page, traffic, close };
}

async function screenshot(page, name) {
  await page.screenshot({ path: path.join(artifacts, `${name}.png`) })
    .catch(error => log('screenshot failed:', error.message));
}

/** OHIF sends the visitor to the provider; oidc-provider's login form signs them in. */
async function signIn(page, login) {
  await page.goto(viewerUrl.href, { waitUntil: 'load' });
  await page.waitForURL(url => url.origin === issuer.origin, { timeout: 30000 });
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill('any');
  await screenshot(page, `${login}-01-login-form`);
  await page.locator('button[type="submit"]').first().click();
  // Consent is skipped for the first-party viewer; back through /callback to the list.
  await page.waitForURL(url => url.origin === viewerUrl.origin && !url.pathname.startsWith('/callback'),
    { timeout: 30000 });
  step(`${login} signed in through the login form`, { url: page.url() });
}

async function waitForRows(page, expected, what) {
  const deadline = Date.now() + 30000;
  let names = [];
  while (Date.now() < deadline) {
    names = await listedNames(page);
    const matched = expected.every(s => names.filter(n => nameMatches(n, s.patientName)).length === 1);
    if (matched && names.length === expected.length) return names;
    await page.waitForTimeout(250);
  }
  throw new Error(`${what}: expected ${JSON.stringify(expected.map(s => s.patientName))}, the ` +
    `list shows ${JSON.stringify(names)}`);
}

async function openFromList(page, study) {
  const names = await listedNames(page);
  const index = names.findIndex(name => nameMatches(name, study.patientName));
  check(index >= 0, `no row for ${study.patientName} in ${JSON.stringify(names)}`);
  await rowsLocator(page).nth(index).click();
  const launch = page.getByRole('button', { name: 'Basic Viewer' });
  await launch.waitFor({ timeout: 15000 });
  await launch.click();
  await page.waitForURL(url => url.pathname.startsWith('/viewer') &&
    url.searchParams.get('StudyInstanceUIDs') === study.uid, { timeout: 30000 });
}

function checkBearer(traffic, what) {
  check(traffic.length > 0, `${what}: no DICOMweb request was made`);
  const bare = traffic.filter(e => !e.bearer);
  check(bare.length === 0, `${what}: DICOMweb requests without a bearer token: ` +
    JSON.stringify(bare.slice(0, 5)));
  const refused = traffic.filter(e => e.status === 401 || e.status === 403);
  check(refused.length === 0, `${what}: refused requests: ${JSON.stringify(refused.slice(0, 5))}`);
}

/** The other user's study by its URL: no row, no pixels, no patient name; every request for
 * it answered 204 (no match) or 404 (exactly like an unknown UID). */
async function nothingOf(browser, user) {
  const { page, traffic } = browser;
  const hidden = user.hidden;
  const since = traffic.length;
  await page.goto(new URL(`viewer?StudyInstanceUIDs=${hidden.uid}`, viewerUrl).href,
    { waitUntil: 'load' });
  const asked = () => traffic.slice(since).filter(e => e.url.includes(hidden.uid));
  for (let waited = 0; asked().length === 0 && waited < 20000; waited += 250) {
    await page.waitForTimeout(250);
  }
  await page.waitForTimeout(4000); // give the viewer time to load anything it could
  await screenshot(page, `${user.login}-04-other-study-by-url`);
  const requests = asked();
  check(requests.length > 0, `${user.login}: the viewer never asked for ${hidden.uid}`);
  const answered = requests.filter(e => ![204, 404].includes(e.status));
  check(answered.length === 0, `${user.login}: requests for the other user's study were ` +
    `answered: ${JSON.stringify(answered)}`);
  const shown = (await canvasStats(page).catch(() => [])).filter(showsImage);
  check(shown.length === 0, `${user.login}: a viewport shows an image of the other user's study`);
  const family = hidden.patientName.split('^')[0];
  const text = await page.locator('body').innerText();
  check(!text.includes(family), `${user.login}: the page shows the other patient's name`);
  checkBearer(traffic.slice(since), `${user.login}, other study`);
  step(`${user.login} gets nothing of ${hidden.patientName}'s study by URL`,
    { requests: requests.map(e => `${e.method} ${e.url.slice(0, 120)} -> ${e.status}`) });
}

async function userScenario(user) {
  const browser = await newBrowser(user.login);
  const { page, traffic } = browser;
  try {
    await signIn(page, user.login);
    await rowsLocator(page).first().waitFor({ timeout: 60000 });
    await dismissBanner(page);
    const names = await waitForRows(page, user.studies, `${user.login}'s study list`);
    await screenshot(page, `${user.login}-02-study-list`);
    checkBearer(traffic, `${user.login}, study list`);
    step(`${user.login} sees only their studies`, { names });

    const since = traffic.length;
    await openFromList(page, user.studies[0]);
    const stats = await waitForImages(page, 1, `${user.login}: the viewport`);
    await skipTour(page);
    await screenshot(page, `${user.login}-03-viewer`);
    const frames = traffic.slice(since).filter(e => e.url.includes('/frames/'));
    check(frames.length > 0 && frames.every(e => e.status === 200),
      `${user.login}: frames not all answered 200`);
    checkBearer(traffic.slice(since), `${user.login}, viewer`);
    step(`${user.login} opens ${user.studies[0].patientName} and sees the image`,
      { stats: stats.filter(showsImage)[0], frames: frames.length });

    await nothingOf(browser, user);
  } catch (error) {
    await screenshot(page, `${user.login}-failure`);
    throw error;
  } finally {
    await browser.close();
  }
}

/** A share link opens its study without signing in: no visit to the provider, the token taken
 * from the URL (OHIF's Mode route) and sent as the bearer of every request. */
async function shareScenario(share) {
  const browser = await newBrowser('share');
  const { page, traffic } = browser;
  const visited = [];
  page.on('framenavigated', frame => { if (frame === page.mainFrame()) visited.push(frame.url()); });
  try {
    await page.goto(share.url, { waitUntil: 'load' });
    const stats = await waitForImages(page, 1, 'share link: the viewport');
    await skipTour(page);
    await screenshot(page, 'share-01-viewer');
    check(!visited.some(url => url.startsWith(issuer.origin)),
      `share link: the browser was sent to the provider: ${JSON.stringify(visited)}`);
    check(!new URL(page.url()).searchParams.has('token'),
      'share link: OHIF left the token in the address bar');
    checkBearer(traffic, 'share link');
    check(traffic.every(e => !e.url.includes('token=')), 'share link: a token in a request URL');
    step('a share link opens its study without sign-in',
      { stats: stats.filter(showsImage)[0], requests: traffic.length });
  } catch (error) {
    await screenshot(page, 'share-failure');
    throw error;
  } finally {
    await browser.close();
  }
}

let exitCode = 1;
try {
  check((config.users || []).length > 0, 'no users given (OHIF_E2E.users)');
  for (const user of config.users) await userScenario(user);
  if (config.share) await shareScenario(config.share);
  report.passed = true;
  exitCode = 0;
} catch (error) {
  report.error = String(error?.stack || error);
  log('FAILED:', error?.message || error);
} finally {
  report.seconds = Number(seconds());
  if (report.pageErrors.length) log('page errors:', JSON.stringify(report.pageErrors.slice(0, 10)));
  fs.writeFileSync(path.join(artifacts, 'report.json'), JSON.stringify(report, null, 2));
  log(report.passed ? 'PASSED' : 'FAILED', `${report.dicomweb.length} DICOMweb requests`);
}
process.exit(exitCode);
