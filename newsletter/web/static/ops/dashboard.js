// Keeps the ops dashboard current: polls status.json and writes the new numbers
// into the cells marked data-field. When the rows themselves would change (a send
// starts, ends or changes state, a problem appears) or the session has ended, it
// reloads the page instead; it also reloads now and then for the charts.
// Without JavaScript, a <noscript> meta refresh reloads the page.
(function () {
  "use strict";
  var board = document.getElementById("dashboard");
  if (!board || !window.fetch) { return; }
  var every = 1000 * (parseInt(board.getAttribute("data-poll-seconds"), 10) || 5);
  var url = board.getAttribute("data-status-url");
  var pollsBeforeReload = 12;

  function utcTime(iso) {
    return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$/, "") + " UTC" : "-";
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) { return "-"; }
    var s = Math.floor(seconds), pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return s >= 3600 ? Math.floor(s / 3600) + "h " + pad(Math.floor(s % 3600 / 60)) + "m"
                     : Math.floor(s / 60) + "m " + pad(s % 60) + "s";
  }

  var FORMATS = {
    rate_per_second: function (v) { return v.toFixed(1) + "/s"; },
    expected_finish_at: utcTime,
    last_seen_at: utcTime,
    oldest_age_seconds: age
  };

  function fill(row, values) {
    if (!row) { return; }
    row.querySelectorAll("[data-field]").forEach(function (cell) {
      var name = cell.getAttribute("data-field");
      if (!(name in values) || name === "state") { return; }  // state changes reload the page
      var format = FORMATS[name] || String;
      cell.textContent = format(values[name]);
    });
  }

  function show(status) {
    if (status.layout !== board.getAttribute("data-layout") || --pollsBeforeReload <= 0) {
      window.location.reload();
      return;
    }
    status.sends.forEach(function (s) { fill(board.querySelector('tr[data-send="' + s.send_id + '"]'), s); });
    status.queues.forEach(function (q) { fill(board.querySelector('tr[data-queue="' + q.name + '"]'), q); });
    status.workers.forEach(function (w) {
      board.querySelectorAll("tr[data-worker]").forEach(function (row) {
        if (row.getAttribute("data-worker") === w.node) { fill(row, w); }
      });
    });
    var when = board.querySelector('[data-field="generated_at"]');
    if (when) { when.textContent = utcTime(status.generated_at); }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (status) { if (status) { show(status); } })
      .catch(function () { /* the next poll tries again */ })
      .then(function () { window.setTimeout(poll, every); });
  }

  window.setTimeout(poll, every);
})();
