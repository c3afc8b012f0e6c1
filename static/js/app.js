/*
 * Registrar — page behaviour. Loaded with `defer` after htmx and Chart.js.
 *
 * The CSP is `script-src 'self'`: no inline scripts or handlers anywhere, so every
 * behaviour is attached here from data-attributes. Contract (see templates/base.html):
 *
 *   <meta name="csrf-token" content="…">      CSRF header on every htmx request
 *   data-confirm="Question?"                   on a <form>, <button>, <a>: ask first
 *     data-confirm-label="Revoke"              text of the confirm button (default "Confirm")
 *     data-confirm-danger                      confirm button drawn as .btn-danger
 *   <table data-keyboard-list> + tr[data-row]  j/k select, Enter opens tr[data-href],
 *     tr [data-action=approve|deny]            a/d click them on the selected row
 *   tr[data-href]                              click anywhere non-interactive opens it
 *   input[type=checkbox][data-select-all="name"]   (or value="name") toggles checkboxes
 *                                              named "name" in the same form
 *   [data-copy="text"] / [data-copy-target="#sel"]  copy to clipboard
 *   <canvas data-chart="json-id">              Chart.js from <script type=application/json id=json-id>
 *     JSON: {"type": "line|bar|doughnut|pie", "labels": [...],
 *            "datasets": [{"label": "...", "data": [...]}], "options": {...}?}
 */
(function () {
  "use strict";

  var PALETTE = ["#1d5bbf", "#d08700", "#196c2e", "#b42318", "#6b4fbb", "#0b7a8a", "#8a5300", "#57606a"];

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  /* ---------- Live region for short announcements ---------- */
  function announce(text) {
    var region = $("#live-region");
    if (!region) {
      region = document.createElement("div");
      region.id = "live-region";
      region.className = "sr-only";
      region.setAttribute("aria-live", "polite");
      document.body.appendChild(region);
    }
    region.textContent = "";
    window.setTimeout(function () { region.textContent = text; }, 30);
  }

  /* ---------- CSRF on htmx requests ---------- */
  function csrfToken() {
    var meta = $('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  document.addEventListener("htmx:configRequest", function (evt) {
    var token = csrfToken();
    if (token) { evt.detail.headers["X-CSRFToken"] = token; }
  });

  /* ---------- Confirm dialogs ---------- */
  var HTMX_ATTRS = ["hx-get", "hx-post", "hx-put", "hx-patch", "hx-delete"];
  function isHtmx(el) {
    return HTMX_ATTRS.some(function (a) { return el.hasAttribute(a) || el.hasAttribute("data-" + a); });
  }

  function ensureDialog() {
    var dlg = $("#confirm-dialog");
    if (dlg) { return dlg; }
    dlg = document.createElement("dialog");
    dlg.id = "confirm-dialog";
    dlg.setAttribute("aria-labelledby", "confirm-dialog-title");
    dlg.innerHTML =
      '<form method="dialog"><div class="dialog-body"><h2 id="confirm-dialog-title">Please confirm</h2>' +
      '<p id="confirm-dialog-message"></p></div><div class="dialog-actions">' +
      '<button type="submit" value="cancel" class="btn btn-secondary">Cancel</button>' +
      '<button type="submit" value="ok" class="btn btn-primary" data-confirm-ok>Confirm</button></div></form>';
    document.body.appendChild(dlg);
    return dlg;
  }

  /* Ask `source`'s data-confirm question; call onOk if confirmed. */
  function askConfirm(source, question, onOk) {
    var dlg = ensureDialog();
    if (typeof dlg.showModal !== "function") {            // very old browser: native confirm
      if (window.confirm(question)) { onOk(); }
      return;
    }
    var ok = $("[data-confirm-ok]", dlg) || $('button[value="ok"]', dlg);
    var msg = $("#confirm-dialog-message", dlg);
    if (msg) { msg.textContent = question; }
    if (ok) {
      ok.textContent = source.getAttribute("data-confirm-label") || "Confirm";
      var danger = source.hasAttribute("data-confirm-danger") || source.classList.contains("btn-danger");
      ok.classList.toggle("btn-danger", danger);
      ok.classList.toggle("btn-primary", !danger);
    }
    dlg.returnValue = "";
    dlg.addEventListener("close", function onClose() {
      dlg.removeEventListener("close", onClose);
      if (dlg.returnValue === "ok") { onOk(); }
      if (source.isConnected && typeof source.focus === "function") { source.focus(); }
    });
    dlg.showModal();
    var cancel = $('button[value="cancel"]', dlg);
    if (cancel) { cancel.focus(); }                        // safe default for destructive actions
  }

  var bypass = false;   // set while re-submitting after a confirmed question

  // Buttons and links carrying their own question (e.g. "Deny" inside a decide form).
  document.addEventListener("click", function (evt) {
    var el = evt.target.closest("button[data-confirm], input[type=submit][data-confirm], a[data-confirm]");
    if (!el || bypass || isHtmx(el) || el.disabled) { return; }
    evt.preventDefault();
    askConfirm(el, el.getAttribute("data-confirm"), function () {
      if (el.tagName === "A") { window.location.assign(el.href); return; }
      var form = el.form;
      if (!form) { return; }
      bypass = true;
      try {
        if (typeof form.requestSubmit === "function") { form.requestSubmit(el); } else { el.click(); }
      } finally { bypass = false; }
    });
  });

  // Whole forms carrying a question (any submit button asks).
  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    if (bypass || !form.matches || !form.matches("form[data-confirm]") || isHtmx(form)) { return; }
    evt.preventDefault();
    var submitter = evt.submitter || null;
    askConfirm(form, form.getAttribute("data-confirm"), function () {
      bypass = true;
      try {
        if (typeof form.requestSubmit === "function") {
          form.requestSubmit(submitter && submitter.form === form ? submitter : undefined);
        } else { form.submit(); }
      } finally { bypass = false; }
    });
  });

  // htmx-driven elements: use the same dialog instead of window.confirm.
  document.addEventListener("htmx:confirm", function (evt) {
    var elt = evt.detail.elt;
    var question = evt.detail.question || (elt && elt.getAttribute && elt.getAttribute("data-confirm"));
    if (!question) { return; }
    evt.preventDefault();
    askConfirm(elt, question, function () { evt.detail.issueRequest(true); });
  });

  /* ---------- Keyboard list: j / k / Enter / a / d ---------- */
  var selectedRow = null;

  function isTyping(target) {
    if (!target || !target.closest) { return false; }
    return !!target.closest("input, textarea, select, [contenteditable=''], [contenteditable='true']");
  }

  function keyboardRows() {
    var table = $("[data-keyboard-list]");
    return table ? $all("tr[data-row]", table) : [];
  }

  function selectRow(row) {
    if (selectedRow && selectedRow !== row) {
      selectedRow.classList.remove("is-selected");
      selectedRow.removeAttribute("aria-selected");
    }
    selectedRow = row;
    if (!row) { return; }
    row.classList.add("is-selected");
    row.setAttribute("aria-selected", "true");
    row.scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", function (evt) {
    if (evt.defaultPrevented || evt.ctrlKey || evt.metaKey || evt.altKey || isTyping(evt.target)) { return; }
    if ($("dialog[open]")) { return; }
    var rows = keyboardRows();
    if (!rows.length) { return; }
    if (selectedRow && rows.indexOf(selectedRow) === -1) { selectedRow = null; }  // swapped out by htmx
    if (!selectedRow) {                                  // adopt a row the server marked as selected
      var marked = rows.filter(function (r) { return r.classList.contains("is-selected"); })[0];
      if (marked) { selectedRow = marked; }
    }
    var index = selectedRow ? rows.indexOf(selectedRow) : -1;
    var key = evt.key;

    if (key === "j" || key === "k") {
      evt.preventDefault();
      var next = key === "j" ? Math.min(index + 1, rows.length - 1) : Math.max(index - 1, 0);
      selectRow(rows[index === -1 ? 0 : next]);
      return;
    }
    if (!selectedRow) { return; }
    if (key === "Enter") {
      // Let Enter keep its normal meaning on focused links and buttons.
      if (evt.target.closest && evt.target.closest("a, button")) { return; }
      var href = selectedRow.getAttribute("data-href");
      if (href) { evt.preventDefault(); window.location.assign(href); }
      return;
    }
    if (key === "a" || key === "d") {
      var action = $(key === "a" ? '[data-action="approve"]' : '[data-action="deny"]', selectedRow);
      if (action && !action.disabled) { evt.preventDefault(); action.click(); }
      return;
    }
    if (key === "Escape") { selectRow(null); }
  });

  // Clicking a row selects it; clicking a non-interactive part of a tr[data-href] opens it.
  document.addEventListener("click", function (evt) {
    var row = evt.target.closest("tr[data-row], tr[data-href]");
    if (!row) { return; }
    if (row.hasAttribute("data-row") && row.closest("[data-keyboard-list]")) { selectRow(row); }
    var interactive = evt.target.closest("a, button, input, select, textarea, label, summary, [data-action]");
    var href = row.getAttribute("data-href");
    if (!interactive && href && !evt.defaultPrevented && !(window.getSelection && String(window.getSelection()))) {
      if (evt.ctrlKey || evt.metaKey) { window.open(href, "_blank", "noopener"); } else { window.location.assign(href); }
    }
  });

  /* ---------- Select all ---------- */
  function selectAllTargets(master) {
    var name = master.getAttribute("data-select-all") || master.value;
    if (!name || name === "on") { return []; }
    var scope = master.form || document;
    return $all('input[type="checkbox"]', scope).filter(function (cb) {
      return cb !== master && cb.name === name && !cb.disabled;
    });
  }
  function syncMaster(master) {
    var boxes = selectAllTargets(master);
    var checked = boxes.filter(function (cb) { return cb.checked; }).length;
    master.checked = boxes.length > 0 && checked === boxes.length;
    master.indeterminate = checked > 0 && checked < boxes.length;
    var counter = master.getAttribute("data-count-target");
    if (counter && $(counter)) { $(counter).textContent = String(checked); }
  }
  document.addEventListener("change", function (evt) {
    var el = evt.target;
    if (!el.matches || !el.matches('input[type="checkbox"]')) { return; }
    if (el.hasAttribute("data-select-all")) {
      selectAllTargets(el).forEach(function (cb) { cb.checked = el.checked; });
      syncMaster(el);
      return;
    }
    $all("input[data-select-all]").forEach(function (master) {
      if (selectAllTargets(master).indexOf(el) !== -1) { syncMaster(master); }
    });
  });

  /* ---------- Copy to clipboard ---------- */
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) { return navigator.clipboard.writeText(text); }
    return new Promise(function (resolve, reject) {     // http:// fallback (e.g. the demo on a LAN)
      var ta = document.createElement("textarea");
      ta.value = text;
      ta.setAttribute("readonly", "");
      ta.className = "sr-only";
      document.body.appendChild(ta);
      ta.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(ta);
      if (ok) { resolve(); } else { reject(new Error("copy failed")); }
    });
  }
  document.addEventListener("click", function (evt) {
    var btn = evt.target.closest("[data-copy], [data-copy-target]");
    if (!btn) { return; }
    evt.preventDefault();
    var text = btn.getAttribute("data-copy") || "";
    var targetSel = btn.getAttribute("data-copy-target");
    if (targetSel && $(targetSel)) {
      var target = $(targetSel);
      text = "value" in target && target.value !== undefined ? target.value : target.textContent;
    }
    text = (text || "").trim();
    if (!text) { return; }
    var original = btn.getAttribute("data-copy-label") || btn.textContent;
    btn.setAttribute("data-copy-label", original);
    copyText(text).then(function () {
      btn.classList.add("is-copied");
      btn.textContent = "Copied";
      announce("Copied to clipboard");
    }, function () {
      btn.textContent = "Press Ctrl+C";
      announce("Copy failed; select the text and copy it manually");
    }).then(function () {
      window.setTimeout(function () {
        btn.classList.remove("is-copied");
        btn.textContent = original;
      }, 2000);
    });
  });

  /* ---------- Charts ---------- */
  function withAlpha(hex, alpha) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16 & 255) + "," + (n >> 8 & 255) + "," + (n & 255) + "," + alpha + ")";
  }

  function chartData(canvas) {
    var id = canvas.getAttribute("data-chart");
    var node = id ? document.getElementById(id) : null;
    if (!node) {                                         // fall back to a sibling json_script
      node = canvas.parentNode && canvas.parentNode.querySelector('script[type="application/json"]');
    }
    if (!node) { return null; }
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  }

  function buildConfig(spec, canvas) {
    var type = spec.type || "line";
    var round = type === "doughnut" || type === "pie";
    var datasets = (spec.datasets || []).map(function (ds, i) {
      var out = Object.assign({}, ds);
      var color = PALETTE[i % PALETTE.length];
      if (round) {
        if (!out.backgroundColor) {
          out.backgroundColor = (ds.data || []).map(function (_, j) { return PALETTE[j % PALETTE.length]; });
        }
        if (!out.borderColor) { out.borderColor = "#ffffff"; }
      } else {
        if (!out.borderColor) { out.borderColor = color; }
        if (!out.backgroundColor) { out.backgroundColor = type === "line" ? withAlpha(color, 0.12) : withAlpha(color, 0.85); }
        if (type === "line") {
          if (out.tension === undefined) { out.tension = 0.25; }
          if (out.pointRadius === undefined) { out.pointRadius = 2; }
          if (out.fill === undefined) { out.fill = spec.datasets.length === 1; }
        }
      }
      return out;
    });
    var options = {
      responsive: true,
      maintainAspectRatio: !canvas.closest(".chart-box"),
      animation: window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches ? false : { duration: 300 },
      plugins: {
        legend: { display: round || datasets.length > 1, position: round ? "right" : "top" },
        title: { display: !!spec.title, text: spec.title || "" }
      }
    };
    if (!round) {
      options.scales = {
        // xMin: the server's first day worth showing (inventory/reports/charts.py); the table keeps every day
        x: { stacked: !!spec.stacked, grid: { display: false }, min: spec.xMin || undefined },
        y: { stacked: !!spec.stacked, beginAtZero: true, ticks: { precision: 0 } }
      };
      options.interaction = { mode: "index", intersect: false };
    }
    if (spec.options) { Object.assign(options, spec.options); }
    return { type: type, data: { labels: spec.labels || [], datasets: datasets }, options: options };
  }

  function renderCharts(root) {
    if (!window.Chart) { return; }
    window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    window.Chart.defaults.color = "#57606a";
    $all("canvas[data-chart]", root).forEach(function (canvas) {
      var spec = chartData(canvas);
      if (!spec) { return; }
      var existing = window.Chart.getChart(canvas);
      if (existing) { existing.destroy(); }
      if (!canvas.hasAttribute("role")) { canvas.setAttribute("role", "img"); }
      if (!canvas.hasAttribute("aria-label")) {
        canvas.setAttribute("aria-label", spec.title || (spec.datasets || []).map(function (d) { return d.label; }).join(", ") || "Chart");
      }
      new window.Chart(canvas, buildConfig(spec, canvas));
    });
  }

  /* ---------- Boot ---------- */
  function init(root) { renderCharts(root || document); }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  } else { init(document); }
  // Content swapped in by htmx gets the same treatment.
  document.addEventListener("htmx:afterSettle", function (evt) { init(evt.detail.elt || document); });

  // For tests and the browser console.
  window.Registrar = { renderCharts: renderCharts, selectRow: selectRow };
})();
