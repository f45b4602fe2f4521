// A picture picked from the library fills its field at once, and its description the
// description field when that is empty. Without JavaScript, saving the section does the same.
(function () {
  document.addEventListener("change", function (event) {
    const radio = event.target;
    if (!radio.matches || !radio.matches('input[type="radio"][data-field]')) return;
    const field = document.getElementById(radio.dataset.field);
    if (field) field.value = radio.value;
    const alt = document.getElementById(radio.dataset.altField);
    if (alt && !alt.value.trim()) alt.value = radio.dataset.alt || "";
  });
})();
