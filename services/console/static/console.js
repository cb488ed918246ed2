// taskstream console: refresh each page's live part in place (no reload, no framework).
// The server answers a request carrying X-Console-Live with that part's HTML alone.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) return;
  var every = parseInt(live.getAttribute("data-refresh") || "0", 10);
  if (!every) return;
  var busy = false;

  function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(window.location.href, {
      headers: { "X-Console-Live": "1" },
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (response) {
        if (response.status === 401) {
          window.location.reload(); // the login page
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== live.innerHTML) {
          live.innerHTML = html;
          live.setAttribute("data-updated", new Date().toISOString());
        }
      })
      .catch(function () {
        /* the server is restarting: try again next time */
      })
      .then(function () {
        busy = false;
      });
  }

  window.setInterval(refresh, every);
})();
