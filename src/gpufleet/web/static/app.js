// gpufleet dashboard: draw the page's charts from their JSON (no inline scripts, no eval: a strict CSP).
(function () {
  "use strict";
  function draw(root) {
    if (typeof window.Plotly === "undefined") { return; }
    root.querySelectorAll("[data-figure]").forEach(function (div) {
      if (div.dataset.drawn === "1") { return; }
      var source = document.getElementById(div.dataset.figure);
      if (!source) { return; }
      var fig = JSON.parse(source.textContent);
      div.dataset.drawn = "1";
      window.Plotly.newPlot(div, fig.data, fig.layout || {}, {displaylogo: false, responsive: true})
        .then(function () {
          div.dataset.rendered = "1";
          if (fig.layout && fig.layout.meta && fig.layout.meta.link !== undefined) { linkPoints(div, fig.layout.meta.link); }
        });
    });
  }
  // A chart whose layout.meta.link = i opens customdata[i] of the point clicked (a URL of this dashboard).
  function linkPoints(div, index) {
    div.on("plotly_click", function (data) {
      var point = data.points && data.points[0];
      var url = point && point.customdata && point.customdata[index];
      if (typeof url === "string" && url.charAt(0) === "/") { window.location.assign(url); }
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (event) { draw(event.target); });
})();
