// End-to-end test of the OHIF viewer served by `dicomweb serve --viewer`, in headless Chromium.
//
// Configuration: JSON in the environment variable OHIF_E2E (or the first argument):
//   url             the viewer, e.g. http://127.0.0.1:8042/
//   studies         [{uid, patientName, patientId, ct?}] every study stored on the server
//   ctStudy         Study Instance UID of the CT opened in the viewer and in MPR
//   search          {text, expect: [uid...]} or a list of them: typed in the Patient filter
//   mpr             also open the MPR layout (default true)
//   quotedVariant   open the CT again with omitQuotationForMultipartRequest false (default true)
//   rtdoseSeries    the study's RTDOSE series, added as a colour wash over the CT
//   dose            its geometry as served, {origin, spacing, frames, peak, low} (see showDoseWash)
//   crossOrigin     the DICOMweb server is at dicomwebOrigin, not the viewer's origin
//   dicomwebOrigin  origin of the DICOMweb server (default: the viewer's)
//   chromium        browser binary (default /usr/bin/chromium)
//   artifacts       folder for screenshots and report.json (default artifacts/e2e)
// Fails (exit 1) on any check that does not hold, and on ANY request to /dicomweb answered
// with a status >= 400 or failing at the network/CORS level.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const config = JSON.parse(process.env.OHIF_E2E || process.argv[2] || '{}');
const viewerUrl = new URL(config.url || 'http://127.0.0.1:8042/');
const dicomwebOrigin = config.dicomwebOrigin || viewerUrl.origin;
const artifacts = path.resolve(config.artifacts || 'artifacts/e2e');
const studies = config.studies || [];
const searches = [config.search || []].flat();
fs.mkdirSync(artifacts, { recursive: true });

const started = Date.now();
const seconds = () => ((Date.now() - started) / 1000).toFixed(1);
const log = (...args) => console.log(`[${seconds()} s]`, ...args);

const report = { passed: false, steps: [], dicomweb: [], failures: [], pageErrors: [], console: [] };
const step = (name, detail = {}) => {
  report.steps.push({ name, at: Number(seconds()), ...detail });
  log('ok:', name, Object.keys(detail).length ? JSON.stringify(detail) : '');
};
function check(condition, message) {
  if (!condition) throw new Error(message);
}

const isDicomweb = url => url.startsWith(dicomwebOrigin + '/dicomweb');
const short = url => decodeURIComponent(url.replace(dicomwebOrigin, ''));

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ohif-e2e-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: config.chromium || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1400, height: 900 },
});
context.setDefaultTimeout(30000);

// Every DICOMweb response is recorded; a status >= 400 or a network/CORS failure fails the test.
context.on('response', response => {
  const url = response.url();
  if (!isDicomweb(url)) return;
  const request = response.request();
  const entry = {
    method: request.method(),
    url,
    status: response.status(),
    accept: request.headers().accept,
    contentType: response.headers()['content-type'],
  };
  report.dicomweb.push(entry);
  if (entry.status >= 400) {
    report.failures.push(entry);
    log(`FAILED DICOMweb request: ${entry.method} ${url} -> ${entry.status} (Accept: ${entry.accept})`);
  }
});
context.on('requestfailed', request => {
  if (!isDicomweb(request.url())) return;
  const entry = {
    method: request.method(),
    url: request.url(),
    status: 0,
    error: request.failure()?.errorText,
    accept: request.headers().accept,
  };
  // Requests the viewer cancels itself (navigating away) are not the server's failures.
  if (entry.error === 'net::ERR_ABORTED') return;
  report.failures.push(entry);
  log(`FAILED DICOMweb request: ${entry.method} ${entry.url}: ${entry.error}`);
});

// Cross-origin, the viewer must not fall back to its own origin for DICOMweb.
context.on('request', request => {
  const url = request.url();
  if (config.crossOrigin && url.startsWith(viewerUrl.origin + '/dicomweb')) {
    report.failures.push({ url, status: 0, error: 'DICOMweb request to the viewer origin' });
  }
});

function watch(page) {
  page.on('pageerror', error => report.pageErrors.push(String(error).slice(0, 500)));
  page.on('console', message => {
    if (message.type() !== 'error' && message.type() !== 'warning') return;
    const text = message.text();
    report.console.push(`${message.type()}: ${text.slice(0, 500)}`);
    if (/CORS|Access-Control-Allow|Cross-Origin|blocked by/i.test(text)) {
      report.failures.push({ url: page.url(), status: 0, error: `console: ${text.slice(0, 500)}` });
      log('CORS/isolation error in the console:', text.slice(0, 300));
    }
  });
}

async function screenshot(page, name) {
  const file = path.join(artifacts, `${name}.png`);
  await page.screenshot({ path: file }).catch(error => log('screenshot failed:', error.message));
  return file;
}

async function dismissBanner(page) {
  const confirm = page.locator('[data-cy="confirm-and-hide-button"]');
  if (await confirm.isVisible().catch(() => false)) await confirm.click().catch(() => {});
}

/** The viewer's first-visit tour covers the viewport in screenshots. */
async function skipTour(page) {
  const skip = page.getByText('Skip all', { exact: true });
  if (await skip.isVisible().catch(() => false)) await skip.click().catch(() => {});
}

// --- the study list -------------------------------------------------------------------------
// The list's filter inputs sit in the table body's first row; study rows have no input.
const rowsLocator = page => page.locator('tbody tr:not(:has(input))');

async function listedNames(page) {
  return (await rowsLocator(page).evaluateAll(rows =>
    rows.map(row => (row.querySelector('td')?.innerText || '').trim()).filter(Boolean)));
}

/** OHIF shows `Family^Given^Middle` as `Family, Given Middle`: every component must show. */
function nameMatches(shown, patientName) {
  const components = patientName.split('=')[0].split('^').filter(Boolean);
  return components.every(component => shown.includes(component));
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

async function studyList(page) {
  await page.goto(viewerUrl.href, { waitUntil: 'load' });
  await rowsLocator(page).first().waitFor({ timeout: 60000 });
  await dismissBanner(page);
  const names = await waitForRows(page, studies, 'study list');
  await screenshot(page, '01-study-list');
  step('study list shows every study with its patient name', { names });
}

async function search(page, { text, expect }, number) {
  const expected = studies.filter(s => expect.includes(s.uid));
  const filter = page.locator('table input').first(); // the Patient column's filter
  const since = report.dicomweb.length;
  await filter.click();
  await filter.pressSequentially(text, { delay: 30 });
  // The list answers from the server (after a debounce): wait for the QIDO search's answer.
  const query = () => report.dicomweb.slice(since).filter(e => /[?&]PatientName=/.test(e.url)).pop();
  for (let waited = 0; !query() && waited < 15000; waited += 100) await page.waitForTimeout(100);
  const sent = query();
  check(sent, `search for ${JSON.stringify(text)}: no QIDO request with PatientName was sent`);
  await page.waitForTimeout(300);
  const names = await waitForRows(page, expected, `search for ${JSON.stringify(text)}`);
  await screenshot(page, `02-search-${number + 1}`);
  step(`search "${text}"`, { query: short(sent.url), names });
  await filter.fill('');
  await waitForRows(page, studies, 'list after clearing the search');
}

// --- viewports ------------------------------------------------------------------------------
/** Pixel statistics of every visible viewport canvas, read back from the page. */
async function canvasStats(page) {
  return page.evaluate(() => {
    const canvases = [...document.querySelectorAll('canvas.cornerstone-canvas, .viewport-element canvas')]
      .filter((c, i, all) => all.indexOf(c) === i && c.width > 16 && c.height > 16 && c.offsetParent);
    return canvases.map(canvas => {
      let data;
      try {
        let context = canvas.getContext('2d', { willReadFrequently: true });
        if (!context) {
          const copy = document.createElement('canvas');
          copy.width = canvas.width;
          copy.height = canvas.height;
          context = copy.getContext('2d');
          context.drawImage(canvas, 0, 0);
        }
        data = context.getImageData(0, 0, canvas.width, canvas.height).data;
      } catch (error) {
        return { error: String(error) };
      }
      const values = new Set();
      let sum = 0, sum2 = 0, lit = 0, n = 0, jumps = 0, colourful = 0;
      const { width, height } = canvas;
      for (let y = 0; y < height; y += 5) {
        let previous = null;
        for (let x = 0; x < width; x += 1) {
          const i = 4 * (y * width + x);
          const v = Math.round(0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2]);
          values.add(v);
          if (Math.max(data[i], data[i + 1], data[i + 2]) - Math.min(data[i], data[i + 1], data[i + 2]) > 40) colourful++;
          sum += v; sum2 += v * v; n++;
          if (v > 8) lit++;
          if (previous !== null) jumps += Math.abs(v - previous);
          previous = v;
        }
      }
      const mean = sum / n;
      const std = Math.sqrt(Math.max(0, sum2 / n - mean * mean));
      return {
        width: canvas.width, height: canvas.height, distinct: values.size,
        mean: Number(mean.toFixed(1)), std: Number(std.toFixed(1)), lit: Number((lit / n).toFixed(3)),
        // share of pixels with a hue (a grayscale CT has none; a dose colour wash does)
        colourful: Number((colourful / n).toFixed(3)),
        // mean step between neighbouring pixels relative to the spread: ~0 for an image of
        // regions, ~1 or more for noise such as pixels decoded with the wrong syntax
        roughness: Number((jumps / n / (std || 1)).toFixed(3)),
      };
    });
  });
}

const showsImage = s =>
  !s.error && s.distinct >= 16 && s.std >= 5 && s.lit >= 0.02 && s.roughness < 0.25;

async function waitForImages(page, count, what, timeout = 60000) {
  const deadline = Date.now() + timeout;
  let stats = [];
  while (Date.now() < deadline) {
    stats = await canvasStats(page).catch(() => []);
    if (stats.length >= count && stats.filter(showsImage).length >= count) {
      await page.waitForTimeout(500); // let the last frames settle before the screenshot
      return stats;
    }
    await page.waitForTimeout(500);
  }
  throw new Error(`${what}: expected ${count} viewport(s) showing an image, got ${JSON.stringify(stats)}`);
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
  step('opened the study from the list', { url: page.url() });
}

function frameAccepts(since) {
  return [...new Set(report.dicomweb.slice(since).filter(e => e.url.includes('/frames/'))
    .map(e => e.accept))];
}

async function viewStudy(page, study, name) {
  const since = report.dicomweb.length;
  const stats = await waitForImages(page, 1, `${name}: the CT viewport`);
  await skipTour(page);
  await dismissBanner(page);
  await screenshot(page, name);
  const accepts = frameAccepts(since);
  check(accepts.length > 0, `${name}: no frame was requested`);
  // COOP/COEP on the viewer's pages make it cross-origin isolated (SharedArrayBuffer).
  const isolated = await page.evaluate(() => window.crossOriginIsolated);
  check(isolated, `${name}: the viewer page is not cross-origin isolated (COOP/COEP headers)`);
  step(`${name}: the viewport shows the image`, { stats: stats.filter(showsImage)[0], accepts });
}

// The dose's volume as cornerstone built it (dimensions, spacing, origin), or null.
async function doseVolume(page, series) {
  return page.evaluate(series => {
    for (const entry of window.cornerstone.cache._volumeCache.values()) {
      const v = entry.volume || entry;
      if ((v.imageIds || []).some(id => id.includes(`/series/${series}/`))) {
        return { dimensions: v.dimensions, spacing: v.spacing, origin: v.origin };
      }
    }
    return null;
  }, series).catch(() => null);
}

// The dose's colour at a patient point of the viewport's current slice plane, moved there first.
async function doseColourAt(page, viewportId, point) {
  return page.evaluate(({ viewportId, point }) => {
    const vp = window.cornerstone.getEnabledElements().find(e => e.viewportId === viewportId)?.viewport;
    if (!vp) return { error: `no viewport ${viewportId}` };
    const { focalPoint, position, viewPlaneNormal: n } = vp.getCamera();
    const along = (point[0] - focalPoint[0]) * n[0] + (point[1] - focalPoint[1]) * n[1] +
      (point[2] - focalPoint[2]) * n[2];
    const shift = p => p.map((v, i) => v + along * n[i]);
    vp.setCamera({ focalPoint: shift(focalPoint), position: shift(position) });
    vp.render();
    return { canvas: vp.worldToCanvas(point) };
  }, { viewportId, point });
}

async function pixelAt(page, canvasPoint) {
  return page.evaluate(([x, y]) => {
    const canvas = [...document.querySelectorAll('canvas.cornerstone-canvas')].find(c => c.offsetParent);
    const scale = canvas.width / canvas.clientWidth;
    const copy = document.createElement('canvas');
    copy.width = canvas.width;
    copy.height = canvas.height;
    const context = copy.getContext('2d');
    context.drawImage(canvas, 0, 0);
    return [...context.getImageData(Math.round(x * scale), Math.round(y * scale), 1, 1).data.slice(0, 3)];
  }, canvasPoint);
}

// An RTDOSE of the study as a colour wash over its CT: OHIF (3.11+) adds it as a layer of the
// CT viewport with its RTDOSE colour map ('Isodose'), as the viewport's data overlay menu does.
// config.dose (the served geometry: origin, spacing, frames; the dose maximum `peak` and a
// near-zero point `low` in patient mm) makes it strict: the volume cornerstone built must have
// that geometry (checked as soon as it exists: a wrong one fails at once instead of waiting
// for colours), and the wash must show the dose, not one colour over the grid: its tint at the
// dose maximum differs from its tint where the dose is near zero (the CT's grey taken out).
async function showDoseWash(page, doseSeries) {
  const since = report.dicomweb.length;
  const before = (await canvasStats(page)).filter(showsImage);
  check(before.length > 0 && before.every(s => s.colourful < 0.002),
    `RTDOSE: the CT alone should be grayscale, got ${JSON.stringify(before)}`);
  const added = await page.evaluate(() => {
    const { displaySetService, viewportGridService } = window.services;
    const sets = displaySetService.getActiveDisplaySets();
    const dose = sets.find(d => d.Modality === 'RTDOSE');
    if (!dose) return { error: 'no RTDOSE display set', modalities: sets.map(d => d.Modality) };
    const { activeViewportId } = viewportGridService.getState();
    window.commandsManager.runCommand('addDisplaySetAsLayer', {
      viewportId: activeViewportId, displaySetInstanceUID: dose.displaySetInstanceUID });
    return { series: dose.SeriesInstanceUID, viewportId: activeViewportId };
  });
  check(!added.error && added.series === doseSeries, `RTDOSE: ${JSON.stringify(added)}`);
  const expected = config.dose;
  const deadline = Date.now() + 60000;
  let stats = [];
  while (Date.now() < deadline) {
    stats = await canvasStats(page).catch(() => []);
    report.doseVolume = report.doseVolume || await doseVolume(page, added.series);
    if (expected && report.doseVolume) {
      const { dimensions, spacing, origin } = report.doseVolume;
      check(dimensions[2] === expected.frames && Math.abs(spacing[2] - expected.spacing) < 1e-3 &&
        origin.every((v, i) => Math.abs(v - expected.origin[i]) < 1e-3),
        `RTDOSE: the dose volume is ${JSON.stringify(report.doseVolume)}, the server's ` +
        `geometry is ${JSON.stringify(expected)}`);
    }
    if (stats.some(s => showsImage(s) && s.colourful >= 0.01)) break;
    await page.waitForTimeout(500);
  }
  const washed = stats.filter(s => showsImage(s) && s.colourful >= 0.01);
  await page.waitForTimeout(500);
  await screenshot(page, '03b-rtdose-wash');
  check(washed.length > 0, `RTDOSE: no colour wash over the CT: ${JSON.stringify(stats)}`);
  if (expected) {
    const colours = {};
    for (const name of ['low', 'peak']) {  // the peak last: its slice is the one shown after
      const at = await doseColourAt(page, added.viewportId, expected[name]);
      check(at.canvas, `RTDOSE: ${JSON.stringify(at)}`);
      await page.waitForTimeout(1000);
      colours[name] = await pixelAt(page, at.canvas);
    }
    await screenshot(page, '03c-rtdose-peak');
    // The wash's tint, without the grey of the CT under it: the colour minus its grey part.
    const tint = rgb => rgb.map(v => v - Math.min(...rgb));
    const distance = Math.hypot(...tint(colours.peak).map((v, i) => v - tint(colours.low)[i]));
    report.doseColours = { ...colours, distance };
    check(distance > 40, `RTDOSE: the wash is one colour, not the dose: ${JSON.stringify(colours)}`);
  }
  const doseRequests = report.dicomweb.slice(since).filter(e => e.url.includes(doseSeries));
  check(doseRequests.some(e => e.url.includes('/frames/') || e.url.includes('/instances/')),
    'RTDOSE: its frames were not retrieved from this server');
  step('RTDOSE: a colour wash over the CT', { stats: washed[0], doseRequests: doseRequests.length,
    colours: report.doseColours });
}

// --- the run --------------------------------------------------------------------------------
let page = context.pages()[0] || await context.newPage();
watch(page);
let exitCode = 1;
try {
  check(studies.length > 0, 'no studies given (OHIF_E2E.studies)');
  await studyList(page);
  for (const [number, query] of searches.entries()) await search(page, query, number);

  const ct = studies.find(s => s.uid === config.ctStudy) || studies.find(s => s.ct) || studies[0];
  await openFromList(page, ct);
  await viewStudy(page, ct, '03-viewer');
  if (config.rtdoseSeries) await showDoseWash(page, config.rtdoseSeries);

  if (config.mpr !== false) {
    const since = report.dicomweb.length;
    const mpr = new URL(`viewer?StudyInstanceUIDs=${ct.uid}&hangingprotocolId=mpr`, viewerUrl);
    await page.goto(mpr.href, { waitUntil: 'load' });
    const stats = await waitForImages(page, 3, 'MPR', 90000);
    await skipTour(page);
    await screenshot(page, '04-mpr');
    const frames = report.dicomweb.slice(since).filter(e => e.url.includes('/frames/')).length;
    step('MPR: three viewports show the volume', { stats: stats.filter(showsImage), frames });
  }

  if (config.quotedVariant !== false) {
    // The same study with `omitQuotationForMultipartRequest: false`: quoted Accept parameters.
    await context.route('**/app-config.js', async route => {
      const response = await route.fetch();
      const body = (await response.text())
        .replace('"omitQuotationForMultipartRequest": true', '"omitQuotationForMultipartRequest": false');
      await route.fulfill({ response, body });
    });
    await page.close();
    page = await context.newPage();
    watch(page);
    await page.goto(new URL(`viewer?StudyInstanceUIDs=${ct.uid}`, viewerUrl).href, { waitUntil: 'load' });
    await viewStudy(page, ct, '05-viewer-quoted-accept');
  }

  check(report.failures.length === 0, `${report.failures.length} DICOMweb request(s) failed`);
  report.passed = true;
  exitCode = 0;
} catch (error) {
  report.error = String(error?.stack || error);
  log('FAILED:', error?.message || error);
  await screenshot(page, 'failure');
} finally {
  report.seconds = Number(seconds());
  report.requests = report.dicomweb.length;
  if (report.failures.length) {
    log('DICOMweb requests that failed:');
    for (const f of report.failures) log(`  ${f.method || ''} ${f.url} -> ${f.status} ${f.error || ''} (Accept: ${f.accept || ''})`);
  }
  if (report.pageErrors.length) log('page errors:', JSON.stringify(report.pageErrors.slice(0, 10)));
  fs.writeFileSync(path.join(artifacts, 'report.json'), JSON.stringify(report, null, 2));
  await context.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
  log(report.passed ? 'PASSED' : 'FAILED', `${report.requests} DICOMweb requests`);
}
process.exit(exitCode);
