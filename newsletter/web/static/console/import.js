// The import's progress bar: polls progress.json and moves the bar; the report replaces the page when done.
// Without JavaScript the page refreshes itself (a <noscript> refresh) until the import is done.
(function () {
  const live = document.getElementById("import-live");
  if (!live) return;
  const bar = document.getElementById("import-bar");
  const seconds = Number(live.dataset.poll) || 2;
  async function refresh() {
    try {
      const response = await fetch(live.dataset.url, { credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      if (data.state === "finished" || data.state === "failed") { location.reload(); return; }
      bar.max = data.rows_total || 1;
      bar.value = data.rows_done;
      bar.textContent = `${data.rows_done} of ${data.rows_total}`;
      for (const field of ["rows_done", "rows_total"]) {
        live.querySelector(`[data-field="${field}"]`).textContent = data[field];
      }
      live.querySelector('[data-field="state"]').textContent =
        data.state === "running" ? "running" : "waiting for a worker";
    } catch (e) { /* the next poll tries again */ }
  }
  setInterval(refresh, seconds * 1000);
})();
