// The publication form's preview and contrast check, updated as one types.
// Without JavaScript the form still works: "Check without saving" asks the server for the same.
(function () {
  const form = document.getElementById("publication-form");
  const preview = document.getElementById("mail-preview");
  const table = document.getElementById("contrast");
  if (!form || !preview || !table) return;
  const HEX = /^#(?:[0-9a-fA-F]{3}){1,2}$/;
  const wcag = Number(table.dataset.wcag) || 4.5;

  function colour(name) {
    if (name === "white") return "#ffffff";
    const input = form.querySelector(`[data-colour="${name}"]`);
    return input && HEX.test(input.value.trim()) ? input.value.trim() : null;
  }
  // WCAG 2 relative luminance and contrast, as newsletter/authoring/colours.py measures them.
  function luminance(hex) {
    let digits = hex.slice(1);
    if (digits.length === 3) digits = digits.split("").map((c) => c + c).join("");
    const linear = [0, 2, 4].map((i) => {
      const c = parseInt(digits.slice(i, i + 2), 16) / 255;
      return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
  }
  function contrast(a, b) {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  }

  function update() {
    for (const name of ["primary", "text", "background", "surface"]) {
      const value = colour(name);
      if (value) preview.style.setProperty(`--m-${name}`, value);
    }
    for (const target of preview.querySelectorAll("[data-from]")) {
      const input = document.getElementById(target.dataset.from);
      if (input) target.textContent = input.value;
    }
    let failing = 0, rows = 0;
    for (const row of table.querySelectorAll("tbody tr")) {
      rows += 1;
      const light = row.dataset.scheme !== "dark";  // dark colours are the file's; only the light ones are typed here
      const fg = (light && colour(row.dataset.fg)) || row.dataset.fgValue;
      const bg = (light && colour(row.dataset.bg)) || row.dataset.bgValue;
      const ratio = contrast(fg, bg);
      const ok = ratio >= wcag;
      if (!ok) failing += 1;
      row.querySelector('[data-part="colours"]').textContent = `${fg} on ${bg}`;
      row.querySelector('[data-part="ratio"]').textContent = `${ratio.toFixed(2)}:1`;
      const result = row.querySelector('[data-part="result"]');
      result.textContent = ok ? "passes" : "too faint";
      result.className = ok ? "pass" : "fail";
    }
    const summary = document.getElementById("contrast-summary");
    if (summary) summary.textContent = failing ? `${failing} of ${rows} pairs are too faint.` : "Every pair passes.";
  }
  form.addEventListener("input", update);
  update();
})();
