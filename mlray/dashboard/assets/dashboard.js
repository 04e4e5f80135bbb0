/* mlray dashboard: draw the embedded plotly figures, make the tables sortable and filterable.
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

  document.querySelectorAll("table.sortable").forEach(makeSortable);
  markWideTables();
  window.addEventListener("resize", markWideTables);
  document.querySelectorAll("input.table-filter").forEach(makeFilter);
  drawCharts();
})();
