// Live progress on the results page: polls progress.json and writes the numbers in place.
// Without JavaScript the page shows the numbers as they were when it was loaded.
(function () {
  const live = document.getElementById("live");
  if (!live) return;
  const url = live.dataset.url;
  const seconds = Number(live.dataset.poll) || 5;
  async function refresh() {
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      for (const send of data.sends) {
        const section = document.querySelector(`[data-send="${send.send_id}"]`);
        if (!section) { location.reload(); return; }
        for (const [field, value] of Object.entries(send)) {
          const cell = section.querySelector(`[data-field="${field}"]`);
          if (cell) cell.textContent = value;
        }
      }
      const state = document.querySelector('h1 [data-field="state"]');
      if (state && state.textContent !== data.state) location.reload();
    } catch (e) { /* the next poll tries again */ }
  }
  setInterval(refresh, seconds * 1000);
})();
