"""The report page's inline style sheet and script (kept as strings: no package data to ship).

The script only draws: for each example it thresholds an embedded level image (one byte per
pixel: how many of the thresholds 0.01 … 0.99 the probability reaches) at the slider's
position, paints the mask and its contour over the image, and shows that threshold's
precision, recall and Dice from the embedded curves.csv rows. It computes no metric.
"""

CSS = """
:root { --ink: #1d2733; --muted: #5b6775; --line: #dde3ea; --accent: #1f5fa8;
        --card: #f5f8fb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.55 -apple-system, "Segoe UI", "DejaVu Sans", Roboto, Helvetica,
       Arial, sans-serif; color: var(--ink); background: #fff; }
.wrap { max-width: 1280px; margin: 0 auto; padding: 0 40px; }
header.top { background: linear-gradient(90deg, #163c6b, #1f5fa8); color: #fff;
             padding: 22px 0 18px; }
header.top h1 { margin: 0 0 4px; font-size: 26px; font-weight: 600; }
header.top p { margin: 2px 0; color: #dce7f5; font-size: 13px; word-break: break-all; }
nav { position: sticky; top: 0; z-index: 5; background: #fff; border-bottom: 1px solid var(--line);
      padding: 8px 0; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; }
main { max-width: 1280px; margin: 0 auto; padding: 10px 40px 40px; }
section { margin-top: 30px; }
h2 { font-size: 21px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 17px; margin: 22px 0 8px; }
p.note, .note { color: var(--muted); font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
        padding: 12px 16px; min-width: 250px; }
.card h3 { margin: 0 0 8px; font-size: 15px; color: var(--muted); }
.card .stats { display: grid; grid-template-columns: repeat(4, auto); gap: 4px 18px; }
.stat .value { font-size: 22px; font-weight: 600; color: var(--accent); }
.stat .label { font-size: 12px; color: var(--muted); }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 12px; text-align: left; }
th { background: var(--card); font-weight: 600; }
td { font-variant-numeric: tabular-nums; }
dl.conventions { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px;
                 font-size: 13px; }
dl.conventions dt { font-weight: 600; }
dl.conventions dd { margin: 0; color: var(--muted); }
.figures { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.figures figure { flex: 1 1 480px; max-width: 620px; }
figure { margin: 0; }
figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; }
.figures figure img { width: 100%; height: auto; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 4px; }
.example { border: 1px solid var(--line); border-radius: 10px; padding: 6px 18px 16px;
           margin-top: 18px; }
.viewer { display: flex; flex-wrap: wrap; gap: 22px; align-items: flex-start; margin-top: 12px; }
.viewer canvas.overlay { width: 440px; max-width: 90vw; height: auto; image-rendering: pixelated;
                         border: 1px solid var(--line); border-radius: 6px; background: #000; }
.controls { min-width: 280px; }
.controls input[type=range] { width: 260px; vertical-align: middle; }
.controls output { font-weight: 600; font-size: 18px; margin-left: 8px; }
.readout { display: grid; grid-template-columns: 90px 80px; gap: 2px 16px; margin: 12px 0;
           font-size: 16px; }
.readout dt { color: var(--muted); }
.readout dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
canvas.pr-plot { width: 280px; height: 170px; border: 1px solid var(--line); border-radius: 6px; }
.legend span { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
               vertical-align: -1px; margin: 0 4px 0 10px; }
img.source { display: none; }
.card p.verdict { margin: 8px 0 0; font-size: 13px; color: var(--muted); }
footer { color: var(--muted); font-size: 12px; padding: 20px 40px;
         border-top: 1px solid var(--line); }
"""

JS = r"""
(function () {
  "use strict";
  var FILL = [0, 170, 255], EDGE = [0, 220, 255], LABEL = [255, 190, 0];

  function pixels(img) {
    var c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    var g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    return g.getImageData(0, 0, c.width, c.height).data;
  }

  function fmt(v) { return (v === null || v === undefined) ? "\u2014" : v.toFixed(3); }

  function setup(widget) {
    var image = widget.querySelector("img.source-image");
    var levels = widget.querySelector("img.source-levels");
    var canvas = widget.querySelector("canvas.overlay");
    var slider = widget.querySelector("input.threshold");
    var shown = widget.querySelector("output.t-value");
    var showLabel = widget.querySelector("input.show-label");
    var plot = widget.querySelector("canvas.pr-plot");
    var curves = JSON.parse(widget.querySelector("script.curves").textContent);
    var w = image.naturalWidth, h = image.naturalHeight;
    canvas.width = w; canvas.height = h;
    var base = pixels(image), lev = pixels(levels);
    var ctx = canvas.getContext("2d");

    function draw() {
      var j = Math.round(parseFloat(slider.value) * 100);
      var out = ctx.createImageData(w, h), o = out.data;
      var withLabel = showLabel.checked;
      function pred(x, y) { return lev[4 * (y * w + x)] >= j; }
      function lab(x, y) { return lev[4 * (y * w + x) + 1] >= j; }
      for (var y = 0; y < h; y++) {
        for (var x = 0; x < w; x++) {
          var i = 4 * (y * w + x), p = pred(x, y), colour = null;
          var r = base[i], g = base[i + 1], b = base[i + 2];
          if (p) {
            r = 0.6 * r + 0.4 * FILL[0]; g = 0.6 * g + 0.4 * FILL[1]; b = 0.6 * b + 0.4 * FILL[2];
          }
          // contour: a pixel whose 4-neighbourhood crosses the mask's edge (2 px wide)
          var edge = (x > 0 && pred(x - 1, y) !== p) || (x < w - 1 && pred(x + 1, y) !== p) ||
                     (y > 0 && pred(x, y - 1) !== p) || (y < h - 1 && pred(x, y + 1) !== p);
          if (edge) colour = EDGE;
          // the soft label's contour: its own border pixels (1 px, inside the label)
          if (withLabel && lab(x, y) && (x === 0 || !lab(x - 1, y) || x === w - 1 ||
              !lab(x + 1, y) || y === 0 || !lab(x, y - 1) || y === h - 1 || !lab(x, y + 1))) {
            colour = LABEL;
          }
          if (colour) { r = colour[0]; g = colour[1]; b = colour[2]; }
          o[i] = r; o[i + 1] = g; o[i + 2] = b; o[i + 3] = 255;
        }
      }
      ctx.putImageData(out, 0, 0);
      shown.textContent = (j / 100).toFixed(2);
      widget.querySelector(".precision").textContent = fmt(curves.precision[j - 1]);
      widget.querySelector(".recall").textContent = fmt(curves.recall[j - 1]);
      widget.querySelector(".dice").textContent = fmt(curves.dice[j - 1]);
      widget.dataset.drawnThreshold = (j / 100).toFixed(2);
      drawPlot(j);
    }

    function drawPlot(j) {
      var W = plot.width, H = plot.height, g = plot.getContext("2d"), m = 26;
      g.clearRect(0, 0, W, H);
      g.strokeStyle = "#c8d0d8"; g.lineWidth = 1;
      g.strokeRect(m, 6, W - m - 6, H - m - 6);
      g.fillStyle = "#5b6775"; g.font = "11px sans-serif";
      g.fillText("0", m - 10, H - m + 4); g.fillText("1", m - 10, 12);
      g.fillText("0", m - 3, H - m + 13); g.fillText("0.5", m + (W - m - 6) / 2 - 8, H - m + 13);
      g.fillText("1", W - 10, H - m + 13); g.fillText("threshold", W / 2 + 16, H - 4);
      function X(k) { return m + (W - m - 6) * (k / 100); }
      function Y(v) { return 6 + (H - m - 12) * (1 - v); }
      [["precision", "#c0392b"], ["recall", "#2e8b57"], ["dice", "#1f5fa8"]].forEach(function (s) {
        g.strokeStyle = s[1]; g.lineWidth = 2; g.beginPath();
        var open = false;
        curves[s[0]].forEach(function (v, k) {
          if (v === null) { open = false; return; }
          if (open) g.lineTo(X(k + 1), Y(v)); else g.moveTo(X(k + 1), Y(v));
          open = true;
        });
        g.stroke();
      });
      g.strokeStyle = "#1d2733"; g.setLineDash([4, 3]); g.beginPath();
      g.moveTo(X(j), 6); g.lineTo(X(j), H - m); g.stroke(); g.setLineDash([]);
    }

    slider.addEventListener("input", draw);
    showLabel.addEventListener("change", draw);
    draw();
    widget.dataset.ready = "1";
  }

  function ready(img) {
    return img.complete && img.naturalWidth > 0 ? Promise.resolve() :
      new Promise(function (ok, fail) { img.onload = ok; img.onerror = fail; });
  }

  window.addEventListener("load", function () {
    document.querySelectorAll(".viewer").forEach(function (widget) {
      var imgs = widget.querySelectorAll("img.source");
      Promise.all(Array.prototype.map.call(imgs, ready)).then(function () { setup(widget); });
    });
  });
})();
"""
