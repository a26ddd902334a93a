// The matrix's filters as one types: rows are shown or hidden as the server would render them for
// the same query, and the URL follows, so the filtered view can be pasted into a bug.
"use strict";
const form = document.getElementById("filters");
const driverInput = document.getElementById("driver-filter");
const reasonSelect = document.getElementById("reason-filter");
const failingOnly = document.getElementById("failing-only");

function applyFilters() {
  const name = driverInput.value.toLowerCase();
  const reason = reasonSelect.value;
  document.querySelectorAll("#matrix tbody tr[data-driver]").forEach((row) => {
    const reasons = row.dataset.reasons.split(" ").filter(Boolean);
    row.hidden = !(row.dataset.driver.toLowerCase().includes(name)
                   && (!reason || reasons.includes(reason))
                   && (!failingOnly.checked || reasons.length > 0 || "buildFailed" in row.dataset));
  });
  const query = new URLSearchParams(new FormData(form));
  for (const [key, value] of [...query.entries()]) {
    if (!value) query.delete(key);
  }
  history.replaceState(null, "", "/matrix" + (query.toString() ? "?" + query : ""));
  document.getElementById("matrix-csv").href = "/matrix.csv?" + query;  // the download follows the filters
}

form.addEventListener("input", applyFilters);
// A paged matrix is filtered by the server (every page): the form is sent; one page is filtered here.
form.addEventListener("submit", (event) => {
  if (!form.dataset.paged) { event.preventDefault(); applyFilters(); }
});

// A package's builds are in the page, folded under its row: its button shows or hides them.
document.querySelectorAll("#matrix button.fold").forEach((button) => {
  button.addEventListener("click", () => {
    const folded = button.closest("tbody").classList.toggle("folded");
    button.setAttribute("aria-expanded", String(!folded));
  });
});
