/* ivr dashboard: progressive enhancement only. Every page works without this file:
   forms post and redirect, the live page reloads itself through <noscript>.
   Vendored with the package; nothing is fetched from elsewhere. */
(function () {
  "use strict";

  // Ask before a form marked data-confirm does something that cannot be undone.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      ev.preventDefault();
    }
  });

  // Regions with data-live-src are replaced by what the server sends (server-sent events).
  if (!window.EventSource) {
    return;
  }
  var regions = document.querySelectorAll("[data-live-src]");
  Array.prototype.forEach.call(regions, function (region) {
    var source = new EventSource(region.getAttribute("data-live-src"));
    source.addEventListener("update", function (ev) {
      var focused = document.activeElement;
      var keep = focused && region.contains(focused) && focused.id ? focused.id : null;
      region.innerHTML = ev.data;  // server-rendered, escaped HTML of this origin
      region.setAttribute("data-live", "connected");
      if (keep && document.getElementById(keep)) {
        document.getElementById(keep).focus();
      }
    });
    source.addEventListener("signed_out", function () {
      source.close();
      window.location.reload();
    });
    source.onerror = function () {
      region.setAttribute("data-live", "reconnecting");
    };
  });
})();
