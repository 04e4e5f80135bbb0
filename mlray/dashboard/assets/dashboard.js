/* mlray dashboard: draw the embedded plotly figures, make the tables sortable and filterable, build the gallery.
   No network, no dependencies besides the plotly.js inlined in the page. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("mlray-data").textContent);
  var plotConfig = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
    toImageButtonOptions: { format: "png", scale: 2 }
  };

  function drawCharts() {
    var nodes = document.querySelectorAll(".chart[data-chart]");
    var jobs = [];
    nodes.forEach(function (node) {
      var entry = data.charts[node.dataset.chart];
      if (!entry || !entry.figure) {
        console.error("mlray dashboard: no figure for chart " + node.dataset.chart);
        return;
      }
      var fig = entry.figure;
      jobs.push(Plotly.newPlot(node, fig.data, fig.layout, plotConfig));
    });
    return Promise.all(jobs).then(function () {
      document.body.dataset.chartsRendered = String(jobs.length);
    }, function (err) {
      console.error("mlray dashboard: a chart failed to render: " + err);
    });
  }

  /* Sorting: numeric columns compare data-v (the raw value; empty = missing, always last), text columns compare
     the text. First click sorts ascending, the next descending. */
  function cellKey(row, index, numeric) {
    var cell = row.cells[index];
    if (!cell) return null;
    if (numeric) {
      var v = cell.getAttribute("data-v");
      return v === null || v === "" ? null : parseFloat(v);
    }
    return cell.textContent.trim();
  }

  function sortTable(table, index, th) {
    var numeric = th.dataset.type === "num";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th").forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
    rows.forEach(function (r, i) { r._pos = i; });
    rows.sort(function (a, b) {
      var ka = cellKey(a, index, numeric), kb = cellKey(b, index, numeric);
      if (ka === null || ka === "" || kb === null || kb === "") {
        var ma = ka === null || ka === "", mb = kb === null || kb === "";
        if (ma !== mb) return ma ? 1 : -1;
        return a._pos - b._pos;
      }
      var c = numeric ? ka - kb : collator.compare(ka, kb);
      if (c === 0) return a._pos - b._pos;
      return ascending ? c : -c;
    });
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r); });
    body.appendChild(frag);
  }

  function makeSortable(table) {
    table.querySelectorAll("thead th").forEach(function (th, index) {
      var button = th.querySelector("button") || th;
      button.addEventListener("click", function () { sortTable(table, index, th); });
    });
  }

  function makeFilter(input) {
    var table = document.getElementById(input.dataset.table);
    var counter = document.querySelector('.row-count[data-table="' + input.dataset.table + '"]');
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var hit = !q || row.textContent.toLowerCase().indexOf(q) !== -1;
        row.style.display = hit ? "" : "none";
        if (hit) shown += 1;
      });
      if (counter) counter.textContent = shown.toLocaleString("en-US") + " of " + table.tBodies[0].rows.length.toLocaleString("en-US") + " rows";
    });
  }

  /* A table wider than its block scrolls sideways: mark the block so the hint and the edge shadow show. */
  function markWideTables() {
    document.querySelectorAll(".table-wrap").forEach(function (wrap) {
      var block = wrap.closest(".table-block") || wrap.parentElement;
      block.classList.toggle("scrolls-x", wrap.scrollWidth > wrap.clientWidth + 1);
    });
  }

  /* Confident mistakes: the cards of the dataset and model chosen in the two menus, built from data.gallery
     (each thumbnail is in the JSON once, as a data: URI, whichever models show it), and that pair's traces of the
     reliability chart (each carries [dataset, model] in its meta; the y = x line carries "base"). */
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function escapeText(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#x27;");
  }

  function mistakeCard(card, thumb, withImage) {
    var fig = el("figure", "mcard");
    fig.dataset.imageId = card.image_id;
    if (withImage) {
      var box = el("div", "thumb");
      if (thumb && thumb.src) {
        var img = document.createElement("img");
        img.src = thumb.src;
        img.alt = card.image_id;
        if (thumb.width && thumb.height) { img.width = thumb.width; img.height = thumb.height; }
        box.appendChild(img);
      } else {
        box.classList.add("none");
        box.textContent = thumb && thumb.note ? thumb.note : "no thumbnail";
      }
      fig.appendChild(box);
    }
    var cap = el("figcaption");
    cap.appendChild(el("div", "mid", "#" + card.rank + " · " + card.image_id));
    var orig = el("div", "lab", "original: ");
    orig.appendChild(el("b", null, card.original_name));
    cap.appendChild(orig);
    var valid = el("div", "lab", "valid: ");
    valid.appendChild(el("b", null, card.valid_names.length ? card.valid_names.join(", ") : "none"));
    cap.appendChild(valid);
    var list = el("ol", "top");
    card.top_names.forEach(function (name, i) {
      var p = card.top_prob[i];
      var cls = card.valid.indexOf(card.top[i]) !== -1 ? "valid" : "";
      if (i === 0) cls += card.top1_valid ? " first ok" : " first bad";
      var item = el("li", cls.trim());
      item.appendChild(el("span", "name", name));
      item.appendChild(el("span", "p", p === null || p === undefined ? "n/a" : p.toFixed(1) + " %"));
      var bar = el("span", "bar");
      bar.style.width = "calc((100% - 8px) * " + (p ? Math.min(100, Math.max(0, p)) / 100 : 0) + ")";
      item.appendChild(bar);
      list.appendChild(item);
    });
    cap.appendChild(list);
    fig.appendChild(cap);
    return fig;
  }

  function showReliability(g, dataset, model) {
    var chart = document.getElementById("reliability");
    if (!chart || !chart.data) return;
    var mine = function (t) { return Array.isArray(t.meta) && t.meta[0] === dataset && t.meta[1] === model; };
    var visible = chart.data.map(function (t) { return !Array.isArray(t.meta) || mine(t); });
    var title = "Reliability of " + escapeText(model) + " on " + escapeText(dataset);
    var drawn = chart.data.some(function (t) { return mine(t) && t.x && t.x.length > 0; });
    var notes = drawn ? [] : [g.no_bins];
    return Plotly.update(chart, { visible: visible }, { "title.text": title, annotations: notes });
  }

  function setupGallery(chartsDrawn) {
    var g = data.gallery;
    var dsel = document.getElementById("gallery-dataset"), msel = document.getElementById("gallery-model");
    if (!g || !dsel || !msel) return;
    function render() {
      var d = dsel.value, m = msel.value;
      var note = g.notes[d];
      var line = document.getElementById("gallery-note");
      if (line) {
        line.hidden = !note;
        line.textContent = note ? "Images not shown: " + note + "." : "";
      }
      var pair = (g.cards[d] || {})[m] || {};
      var thumbs = g.thumbs[d] || {};
      g.kinds.forEach(function (kind) {
        var grid = document.getElementById("gallery-" + kind);
        if (!grid) return;
        var cards = pair[kind] || [];
        grid.textContent = "";
        cards.forEach(function (c) { grid.appendChild(mistakeCard(c, thumbs[c.image_id], !note)); });
        if (!cards.length) grid.appendChild(el("p", "empty", "No image of this kind for " + m + " on " + d + "."));
        var count = document.getElementById("gallery-" + kind + "-count");
        if (count) count.textContent = cards.length + (cards.length === 1 ? " image" : " images");
      });
      return chartsDrawn.then(function () { return showReliability(g, d, m); }).then(function () {
        document.body.dataset.gallery = JSON.stringify([d, m]);
      });
    }
    dsel.addEventListener("change", render);
    msel.addEventListener("change", render);
    render();
  }

  document.querySelectorAll("table.sortable").forEach(makeSortable);
  markWideTables();
  window.addEventListener("resize", markWideTables);
  document.querySelectorAll("input.table-filter").forEach(makeFilter);
  setupGallery(drawCharts());
})();
