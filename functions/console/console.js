// graylane console: live updates (server-sent events) and button posts. No dependencies.
(function () {
  "use strict";
  var body = document.body;
  var csrf = body.getAttribute("data-csrf") || "";
  var stream = body.getAttribute("data-stream");

  function flash(kind, text) {
    var el = document.getElementById("flash");
    if (!el) {
      el = document.createElement("div");
      el.id = "flash";
      el.setAttribute("role", "status");
      var main = document.querySelector("main");
      main.insertBefore(el, main.firstChild);
    }
    el.className = "flash " + kind;
    el.textContent = text;
  }

  function carry(from, to) {  // keep what the user typed when the form is re-rendered
    var inputs = from.querySelectorAll("input[name], select[name]");
    for (var i = 0; i < inputs.length; i++) {
      var old = inputs[i];
      if (old.type === "hidden") continue;
      var now = to.querySelector('[name="' + old.name.replace(/"/g, "") + '"]');
      if (now && now.type !== "hidden" && old.value !== old.defaultValue) now.value = old.value;
    }
  }

  function swapActions(html, key) {
    var current = document.getElementById("actions");
    if (!current || current.getAttribute("data-key") === key) return;
    var box = document.createElement("div");
    box.innerHTML = html;
    var next = box.firstElementChild;
    if (!next) return;
    carry(current, next);
    current.replaceWith(next);
  }

  if (stream && window.EventSource) {
    var dot = document.getElementById("live-dot");
    var source = new EventSource(stream);
    source.addEventListener("open", function () { if (dot) dot.classList.add("on"); });
    source.addEventListener("error", function () { if (dot) dot.classList.remove("on"); });
    source.addEventListener("state", function (e) {
      var data = JSON.parse(e.data);
      var live = document.getElementById("live");
      if (live && typeof data.live === "string") live.innerHTML = data.live;
      if (typeof data.actions === "string") swapActions(data.actions, data.actionsKey);
      body.setAttribute("data-version", data.version || "");
    });
    source.addEventListener("signed-out", function () { source.close(); window.location.reload(); });
  }

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.classList || !form.classList.contains("actions") || !window.fetch) return;
    e.preventDefault();
    var data = new FormData(form, e.submitter || undefined);
    var buttons = form.querySelectorAll("button");
    for (var i = 0; i < buttons.length; i++) buttons[i].disabled = true;
    flash("info", "sending " + (data.get("action") || "") + "…");
    // form.getAttribute, not form.action: the buttons are named "action" and would shadow the property
    fetch(form.getAttribute("action"), {
      method: "POST", credentials: "same-origin", body: new URLSearchParams(data),
      headers: {"X-CSRF-Token": csrf, "Accept": "application/json"}
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        flash(r.ok ? "ok" : "error", j.message || j.error || ("HTTP " + r.status));
      });
    }).catch(function (err) {
      flash("error", "not sent: " + err);
    }).then(function () {
      for (var i = 0; i < buttons.length; i++) buttons[i].disabled = false;
    });
  });
})();
