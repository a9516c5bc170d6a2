// What the browser scenarios read back from OHIF's page: the study list's rows, and the pixels
// of the viewport canvases (an image, not a blank or noise).

/** The list's filter inputs sit in the table body's first row; study rows have no input. */
export const rowsLocator = page => page.locator('tbody tr:not(:has(input))');

export async function listedNames(page) {
  return (await rowsLocator(page).evaluateAll(rows =>
    rows.map(row => (row.querySelector('td')?.innerText || '').trim()).filter(Boolean)));
}

/** OHIF shows `Family^Given^Middle` as `Family, Given Middle`: every component must show. */
export function nameMatches(shown, patientName) {
  const components = patientName.split('=')[0].split('^').filter(Boolean);
  return components.every(component => shown.includes(component));
}

export async function dismissBanner(page) {
  const confirm = page.locator('[data-cy="confirm-and-hide-button"]');
  if (await confirm.isVisible().catch(() => false)) await confirm.click().catch(() => {});
}

/** The viewer's first-visit tour covers the viewport in screenshots. */
export async function skipTour(page) {
  const skip = page.getByText('Skip all', { exact: true });
  if (await skip.isVisible().catch(() => false)) await skip.click().catch(() => {});
}

/** Pixel statistics of every visible viewport canvas, read back from the page. */
export async function canvasStats(page) {
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
      let sum = 0, sum2 = 0, lit = 0, n = 0, jumps = 0;
      const { width, height } = canvas;
      for (let y = 0; y < height; y += 5) {
        let previous = null;
        for (let x = 0; x < width; x += 1) {
          const i = 4 * (y * width + x);
          const v = Math.round(0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2]);
          values.add(v);
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
        // mean step between neighbouring pixels relative to the spread: ~0 for an image of
        // regions, ~1 or more for noise such as pixels decoded with the wrong syntax
        roughness: Number((jumps / n / (std || 1)).toFixed(3)),
      };
    });
  });
}

export const showsImage = s =>
  !s.error && s.distinct >= 16 && s.std >= 5 && s.lit >= 0.02 && s.roughness < 0.25;

export async function waitForImages(page, count, what, timeout = 60000) {
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
