// viewer_edit.mjs - a radiologist's corrections in OHIF 3, driven in headless Chromium
// (playwright-core and the Debian chromium that ../shared/viewer/setup.sh installed).
//
//   node viewer_edit.mjs --viewer URL --study UID --sr SOP_UID --out DIR
//                        --playwright DIR --chromium PATH [--timeout SEC]
//                        [--edit N --drag DX,DY] [--delete M] [--new-series]
//
// Opens the study in OHIF, loads the SR --sr (OHIF hydrates its measurements into
// editable RectangleROI tools), drags the bottom-right corner of measurement N by
// (DX, DY) source pixels with the mouse, deletes measurement M from the measurement
// panel (its row's menu), and saves ("Create SR", then Save in OHIF's dialog: OHIF
// stores the new SR to its DICOMweb data source, STOW-RS). The dialog's default series
// is the loaded SR's (OHIF then names it in Predecessor Documents); --new-series picks
// "Create new series" instead. Measurements are numbered as OHIF lists them (0-based).
//
// Writes DIR/report.json: every measurement before the edit (OHIF's id, label, the
// referenced image and the box in source pixels: x along columns, y along rows, (0, 0)
// at the top-left corner of the top-left pixel), the edited one after the drag, the
// deleted one, the saved SR's SOP Instance UID and the browser's console errors; and
// screenshots hydrated.png, edited.png, deleted.png, dialog.png, saved.png.
// Exit 0 when every step happened; 1 with report.error otherwise. Every wait is for a
// condition, up to --timeout seconds (default 60).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const args = {};
for (let i = 2; i < process.argv.length; i++) {
  const key = process.argv[i].replace(/^--/, '');
  args[key] = process.argv[i + 1]?.startsWith('--') || i + 1 === process.argv.length ? true : process.argv[++i];
}
const WAIT = Number(args.timeout || 60) * 1000;
const { chromium } = createRequire(import.meta.url)(path.resolve(args.playwright));
const out = path.resolve(args.out);
fs.mkdirSync(out, { recursive: true });

// ---- in the page: OHIF's services (window.services) and cornerstone (window.cornerstone)
const inPage = {
  viewport() {
    const vpId = window.services.viewportGridService.getActiveViewportId();
    return window.cornerstone.getRenderingEngines().map(e => e.getViewport(vpId)).find(Boolean);
  },
  // a measurement as the report gives it: its box in source pixels and on the page
  measurement(m) {
    const cs = window.cornerstone, vp = window.__edit.viewport();
    const image = m.points.map(p => cs.utilities.worldToImageCoords(m.referencedImageId, p));
    const rect = vp.element.querySelector('canvas').getBoundingClientRect();
    const onPage = m.points.map(p => { const c = vp.worldToCanvas(p); return [rect.left + c[0], rect.top + c[1]]; });
    const xs = image.map(p => p[0]), ys = image.map(p => p[1]);
    return { uid: m.uid, label: m.label || '', sop_instance_uid: m.SOPInstanceUID, frame: m.frameNumber || 1,
      box: [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)], image_points: image, page_points: onPage,
      drawn: !!document.querySelector(`svg.svg-layer rect[data-id^="${m.uid}"]`),
      on_screen: vp.getCurrentImageId?.() === m.referencedImageId };
  },
  measurements() {
    return window.services.measurementService.getMeasurements().map(m => window.__edit.measurement(m));
  },
  // where on the page a point given in source pixels of the measurement's image is
  toPage(uid, x, y) {
    const cs = window.cornerstone, vp = window.__edit.viewport();
    const m = window.services.measurementService.getMeasurement(uid);
    const world = cs.utilities.imageToWorldCoords(m.referencedImageId, [x, y]);
    const c = vp.worldToCanvas(world), rect = vp.element.querySelector('canvas').getBoundingClientRect();
    return [rect.left + c[0], rect.top + c[1]];
  },
  srDisplaySets() {
    return window.services.displaySetService.getActiveDisplaySets().filter(d => d.Modality === 'SR')
      .map(d => ({ uid: d.displaySetInstanceUID, sop: d.SOPInstanceUID, hydrated: !!d.isHydrated,
        series: d.SeriesInstanceUID, description: d.SeriesDescription || '' }));
  },
};
const initScript = `localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
window.__edit = {${Object.entries(inPage).map(([k, f]) => `${k}: ${f.toString().replace(/^\w+\(/, 'function(')}`).join(',\n')}};`;

const report = { viewer: args.viewer, study: args.study, sr: args.sr, steps: [], console_errors: [] };
const step = (name, t0) => report.steps.push({ step: name, s: +((Date.now() - t0) / 1000).toFixed(1) });
const shot = async (page, name) => { await page.screenshot({ path: path.join(out, name) }); report.screenshots = [...(report.screenshots || []), name]; };
const sameBox = (a, b) => a.every((v, i) => Math.abs(v - b[i]) < 0.5);

const browser = await chromium.launch({
  executablePath: args.chromium,
  args: ['--use-gl=angle', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist',
    '--no-sandbox', '--disable-dev-shm-usage'] });
let page;
let code = 1;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.addInitScript({ content: initScript });
  page = await context.newPage();
  page.on('console', m => m.type() === 'error' && report.console_errors.push(m.text().split('\n')[0].slice(0, 300)));
  page.on('pageerror', e => report.console_errors.push(`uncaught: ${e.message}`.slice(0, 300)));
  page.on('response', r => r.status() >= 400 && report.console_errors.push(`HTTP ${r.status()} ${r.url()}`.slice(0, 300)));

  // 1. open the study and load our SR: OHIF hydrates its groups into measurements
  let t0 = Date.now();
  await page.goto(`${args.viewer}/viewer?StudyInstanceUIDs=${args.study}`, { timeout: WAIT });
  const srSet = await page.waitForFunction(sop => window.services?.displaySetService
    && window.__edit.srDisplaySets().find(d => d.sop === sop), args.sr, { timeout: WAIT }).then(h => h.jsonValue());
  await page.locator(`[id="thumbnail-${srSet.uid}"]`).dblclick({ timeout: WAIT });
  // hydrated, each measurement's rectangle drawn over its image
  await page.waitForFunction(() => {
    const ms = window.services.measurementService.getMeasurements();
    return ms.length > 0 && window.__edit.measurements().every(m => m.drawn && m.on_screen);
  }, null, { timeout: WAIT, polling: 200 });
  await page.locator('[data-cy=trackedMeasurements-btn]').click({ timeout: WAIT });
  await page.locator('[data-cy=trackedMeasurements-panel] [data-cy=data-row]').first().waitFor({ timeout: WAIT });
  // the panel narrows the viewport: wait until the rectangles are drawn where they now are
  await page.waitForFunction(() => window.__edit.measurements().every(m => {
    const r = document.querySelector(`svg.svg-layer rect[data-id^="${m.uid}"]`)?.getBoundingClientRect();
    const x = Math.min(...m.page_points.map(p => p[0]));
    return r && Math.abs(r.left - x) < 2;
  }), null, { timeout: WAIT, polling: 200 });
  report.before = await page.evaluate(() => window.__edit.measurements());
  report.before.forEach(m => { delete m.page_points; });
  await shot(page, 'hydrated.png');
  step('hydrated', t0);

  // 2. drag the bottom-right corner of measurement N by (DX, DY) source pixels
  if (args.edit !== undefined) {
    t0 = Date.now();
    const [dx, dy] = String(args.drag || '3,2').split(',').map(Number);
    const uid = report.before[Number(args.edit)].uid;
    const m = await page.evaluate(u => window.__edit.measurement(window.services.measurementService.getMeasurement(u)), uid);
    const corner = m.image_points.reduce((a, b) => (b[0] + b[1] > a[0] + a[1] ? b : a));
    const from = m.page_points[m.image_points.indexOf(corner)];
    const target = [corner[0] + dx, corner[1] + dy];
    const to = await page.evaluate(([u, x, y]) => window.__edit.toPage(u, x, y), [uid, ...target]);
    await page.mouse.move(from[0] + 8, from[1] + 8);
    await page.mouse.move(from[0], from[1], { steps: 4 }); // hover: the tool highlights the handle
    await page.mouse.down();
    await page.mouse.move(to[0], to[1], { steps: 10 });
    await page.mouse.up();
    const after = await page.waitForFunction(([u, box]) => {
      const mm = window.services.measurementService.getMeasurement(u);
      const now = mm && window.__edit.measurement(mm);
      return now && now.box.some((v, i) => Math.abs(v - box[i]) > 0.5) ? now : null;
    }, [uid, m.box], { timeout: WAIT, polling: 200 }).then(h => h.jsonValue());
    delete after.page_points;
    report.edited = { index: Number(args.edit), uid, label: m.label, box_before: m.box, corner_before: corner,
      drag: [dx, dy], corner_target: target, box_after: after.box, page_from: from, page_to: to };
    await shot(page, 'edited.png');
    step('edited', t0);
  }

  // 3. delete measurement M from the measurement panel (its row's menu, then Delete)
  if (args.delete !== undefined) {
    t0 = Date.now();
    const index = Number(args.delete);
    const uidsBefore = (await page.evaluate(() => window.__edit.measurements())).map(m => m.uid);
    await page.locator('[data-cy=actionsMenuTrigger]').nth(index).click({ timeout: WAIT });
    await page.getByRole('menuitem', { name: 'Delete' }).click({ timeout: WAIT });
    await page.waitForFunction(n => window.services.measurementService.getMeasurements().length === n - 1,
      uidsBefore.length, { timeout: WAIT, polling: 200 });
    const left = (await page.evaluate(() => window.__edit.measurements())).map(m => m.uid);
    const gone = uidsBefore.filter(u => !left.includes(u));
    const was = report.before.find(m => m.uid === gone[0]);
    report.deleted = { index, uid: gone[0], label: was?.label, box: was?.box };
    if (gone.length !== 1 || gone[0] === report.edited?.uid)
      throw new Error(`deleting row ${index} removed ${gone.length} measurement(s), the edited one: ${gone[0] === report.edited?.uid}`);
    await shot(page, 'deleted.png');
    step('deleted', t0);
  }

  // 4. save: "Create SR", then Save with OHIF's defaults; OHIF STOWs the new SR
  t0 = Date.now();
  const known = new Set((await page.evaluate(() => window.__edit.srDisplaySets())).map(d => d.sop));
  await page.getByRole('button', { name: 'Create SR' }).click({ timeout: WAIT });
  const dialog = page.getByRole('dialog');
  await dialog.waitFor({ timeout: WAIT });
  if (args['new-series']) {
    await dialog.locator('button').first().click({ timeout: WAIT });
    await page.getByRole('option', { name: 'Create new series' }).click({ timeout: WAIT });
    await dialog.locator('button').first().filter({ hasText: 'Create new series' }).waitFor({ timeout: WAIT });
  }
  report.dialog_series = (await dialog.locator('button').first().textContent())?.trim();
  await shot(page, 'dialog.png');
  const stow = page.waitForResponse(r => r.request().method() === 'POST' && /\/dicom-web\/studies(\/|$|\?)/.test(r.url()), { timeout: WAIT });
  await dialog.locator('[data-cy=input-dialog-save-button]').getByRole('button').click({ timeout: WAIT });
  const response = await stow;
  report.stow_status = response.status();
  if (response.status() !== 200) throw new Error(`STOW-RS answered HTTP ${response.status()}`);
  const saved = await page.waitForFunction(k => window.__edit.srDisplaySets().find(d => !k.includes(d.sop)),
    [...known], { timeout: WAIT, polling: 200 }).then(h => h.jsonValue());
  report.saved = { sop_instance_uid: saved.sop, series_instance_uid: saved.series, series_description: saved.description };
  report.after = (await page.evaluate(() => window.__edit.measurements())).map(({ page_points, ...m }) => m);
  await shot(page, 'saved.png');
  step('saved', t0);
  code = 0;
} catch (e) {
  report.error = `viewer_edit: ${String(e.stack || e).split('\n').slice(0, 3).join(' | ')}`.slice(0, 1500);
  if (page) await shot(page, 'failed.png').catch(() => {});
} finally {
  fs.writeFileSync(path.join(out, 'report.json'), JSON.stringify(report, null, 2));
  await browser.close();
}
console.log(code ? `[viewer_edit] FAILED: ${report.error}` : `[viewer_edit] OK: ${report.steps.map(s => `${s.step} ${s.s}s`).join(', ')}`);
process.exit(code);
