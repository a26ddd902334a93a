// The "queue the explanation" forms beside each `kabigate explain` command: POST /api/v1/explanations
// with the write token (kept for this tab only), then the task is followed until the server has
// explained the CRC changes and cached their causes; reloading the page shows them.
"use strict";
const TOKEN_KEY = "kabigate-write-token";
const POLL_MS = 2000;

function follow(form, key, state) {
  fetch("/api/v1/tasks/" + encodeURIComponent(key)).then((answer) => answer.json()).then((task) => {
    if (task.state === "done") {
      state.innerHTML = "";
      state.append(`explained ${task.result.explained} of ${task.result.explained + task.result.unexplained}: `);
      const reload = document.createElement("a");
      reload.href = location.href;
      reload.textContent = "reload to see the causes";
      state.append(reload);
    } else if (task.state === "failed") {
      state.textContent = "failed: " + task.error;
    } else {
      state.textContent = task.state + "...";
      setTimeout(() => follow(form, key, state), POLL_MS);
    }
  });
}

document.querySelectorAll("form.explain-queue").forEach((form) => {
  const token = form.elements.token;
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const state = form.querySelector("output.explain-state");
    sessionStorage.setItem(TOKEN_KEY, token.value);
    const body = {old: form.dataset.old, new: form.dataset.new, symbols: form.dataset.symbols.split(" ")};
    if (form.dataset.stream) body.stream = form.dataset.stream;
    state.textContent = "queueing...";
    fetch("/api/v1/explanations", {method: "POST", body: JSON.stringify(body),
                                   headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token.value}})
      .then((answer) => answer.json().then((reply) => {
        if (!answer.ok) { state.textContent = "refused: " + reply.detail; return; }
        follow(form, reply.key, state);
      }));
  });
});
