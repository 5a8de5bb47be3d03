// Loss and accuracy against epochs (fractional while an epoch runs): the finished epochs'
// rows as dots joined by lines, the epoch in progress as a thin line through the points the
// live feed brought (mean train loss / accuracy so far, at each checkpoint), and a marker at
// the job's current step.

import { clear, el } from "./svg.js";

const W = 420;
const PANEL_H = 150;
const PAD = { left: 44, right: 12, top: 18, bottom: 22 };

function panel(svg, top, title, xMax, yMin, yMax, format) {
  const g = el("g", { transform: `translate(0,${top})`, class: "panel" });
  const iw = W - PAD.left - PAD.right;
  const ih = PANEL_H - PAD.top - PAD.bottom;
  const sx = (x) => PAD.left + (x / xMax) * iw;
  const sy = (y) => PAD.top + ih - ((y - yMin) / (yMax - yMin || 1)) * ih;
  g.append(el("text", { x: PAD.left, y: 12, class: "title" }, title));
  g.append(el("rect", { x: PAD.left, y: PAD.top, width: iw, height: ih, class: "frame" }));
  for (let i = 0; i <= 2; i++) {
    const v = yMin + ((yMax - yMin) * i) / 2;
    g.append(el("text", { x: PAD.left - 4, y: sy(v) + 4, class: "tick", "text-anchor": "end" }, format(v)));
  }
  const step = Math.max(1, Math.ceil(xMax / 8));
  for (let e = 0; e <= xMax; e += step) {
    g.append(el("text", { x: sx(e), y: PAD.top + ih + 14, class: "tick", "text-anchor": "middle" }, String(e)));
  }
  svg.append(g);
  return { g, sx, sy, ih };
}

function line(p, points, cls) {
  if (points.length === 0) return;
  const d = points.map(([x, y], i) => `${i ? "L" : "M"}${p.sx(x).toFixed(1)},${p.sy(y).toFixed(1)}`).join(" ");
  p.g.append(el("path", { d, class: `line ${cls}` }));
}

function dots(p, points, cls) {
  for (const [x, y] of points) p.g.append(el("circle", { cx: p.sx(x), cy: p.sy(y), r: 3, class: `dot ${cls}` }));
}

function legend(p, items) {
  let x = W - PAD.right;
  for (const [label, cls] of items.reverse()) {
    const t = el("text", { x, y: 12, class: `legend ${cls}`, "text-anchor": "end" }, label);
    p.g.append(t);
    x -= label.length * 6.5 + 12;
  }
}

// epochs: report rows; fine: [{x, train_loss, train_accuracy}]; now: the current x.
export function drawCurves(svg, { epochs, fine, epochsTotal, now }) {
  const xMax = Math.max(1, epochsTotal || epochs.length);
  clear(svg, W, 2 * PANEL_H);
  svg.setAttribute("data-epochs", epochs.length);
  svg.setAttribute("data-points", fine.length);
  const losses = [...epochs.flatMap((r) => [r.train_loss, r.test_loss]), ...fine.map((f) => f.train_loss)];
  const lossMax = Math.max(0.1, ...losses.filter(Number.isFinite));
  const loss = panel(svg, 0, "loss", xMax, 0, lossMax, (v) => v.toFixed(2));
  line(loss, fine.map((f) => [f.x, f.train_loss]), "fine train");
  line(loss, epochs.map((r) => [r.epoch, r.train_loss]), "train");
  line(loss, epochs.map((r) => [r.epoch, r.test_loss]), "test");
  dots(loss, epochs.map((r) => [r.epoch, r.train_loss]), "train");
  dots(loss, epochs.map((r) => [r.epoch, r.test_loss]), "test");
  legend(loss, [["train", "train"], ["test", "test"]]);

  const accs = [...epochs.flatMap((r) => [r.train_accuracy, r.test_accuracy]), ...fine.map((f) => f.train_accuracy)];
  const accMin = Math.min(0.9, ...accs.filter(Number.isFinite));
  const acc = panel(svg, PANEL_H, "accuracy", xMax, Math.max(0, Math.floor(accMin * 10) / 10), 1, (v) => `${(v * 100).toFixed(0)}%`);
  line(acc, fine.map((f) => [f.x, f.train_accuracy]), "fine train");
  line(acc, epochs.map((r) => [r.epoch, r.train_accuracy]), "train");
  line(acc, epochs.map((r) => [r.epoch, r.test_accuracy]), "test");
  dots(acc, epochs.map((r) => [r.epoch, r.train_accuracy]), "train");
  dots(acc, epochs.map((r) => [r.epoch, r.test_accuracy]), "test");
  legend(acc, [["train", "train"], ["test", "test"]]);

  if (now !== null && now !== undefined) {
    for (const p of [loss, acc]) {
      p.g.append(el("line", { x1: p.sx(now), x2: p.sx(now), y1: PAD.top, y2: PAD.top + p.ih, class: "now" }));
    }
  }
}
