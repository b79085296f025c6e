/* txbroker's admin: copy buttons copy the whole value, ages stay current, and the
   dashboard refreshes itself. A file of its own: the Content-Security-Policy allows no
   inline script. */
"use strict";
(function () {
  function copyText(text, button) {
    function done() {
      button.classList.add("txb-copied");
      button.setAttribute("title", "Copied");
      setTimeout(function () { button.classList.remove("txb-copied"); }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallback(text); done(); });
    } else {
      fallback(text);
      done();
    }
  }

  function fallback(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
    document.body.removeChild(area);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".txb-copy") : null;
    if (!button) { return; }
    event.preventDefault();
    copyText(button.getAttribute("data-copy"), button);
  });

  function agoText(seconds) {
    var ahead = seconds < 0, s = Math.abs(seconds), amount;
    if (s < 60) { amount = Math.round(s) + " s"; }
    else if (s < 3600) { amount = Math.floor(s / 60) + " min"; }
    else if (s < 86400) { amount = Math.floor(s / 3600) + " h"; }
    else { amount = Math.floor(s / 86400) + " d"; }
    return ahead ? "in " + amount : amount + " ago";
  }

  // The server's clock, not the browser's: the page says what time it was when drawn.
  var skew = 0;
  function measureSkew() {
    var stamp = document.querySelector("[data-server-now]");
    if (stamp) { skew = parseFloat(stamp.getAttribute("data-server-now")) * 1000 - Date.now(); }
  }

  function tick() {
    var now = (Date.now() + skew) / 1000;
    document.querySelectorAll(".txb-ago[data-ts]").forEach(function (el) {
      el.textContent = agoText(now - parseFloat(el.getAttribute("data-ts")));
    });
  }

  function refreshDashboard(board) {
    var every = parseFloat(board.getAttribute("data-refresh-seconds") || "0");
    if (!(every > 0)) { return; }
    var status = document.getElementById("txb-refresh-status");
    function load() {
      if (document.hidden) { return; }
      fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (response) {
          if (!response.ok) { throw new Error(response.status); }
          return response.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          var next = fresh.getElementById("txb-dashboard-live");
          var current = document.getElementById("txb-dashboard-live");
          if (next && current) {
            current.replaceWith(document.importNode(next, true));
            measureSkew();
            tick();
          }
          if (status) { status.textContent = "updated " + new Date().toLocaleTimeString(); }
        })
        .catch(function () {
          if (status) { status.textContent = "refresh failed, retrying"; }
        });
    }
    setInterval(load, every * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    measureSkew();
    tick();
    setInterval(tick, 1000);
    var board = document.getElementById("txb-dashboard");
    if (board) { refreshDashboard(board); }
  });
})();
