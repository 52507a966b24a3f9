/* pneumo single page: upload one image, show the model's answer and its Grad-CAM heatmap.
   Plain JS, no dependencies; talks to POST /v1/predict?cam=true and GET /v1/model. */
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var drop = $("drop"), fileInput = $("file"), statusEl = $("status"), errorEl = $("error");
  var result = $("result"), image = $("image"), heatmap = $("heatmap");
  var camToggle = $("cam-toggle"), opacity = $("opacity"), opacityValue = $("opacity-value");
  var busy = false, hasCam = false;

  function fmt(x, digits) {
    return typeof x === "number" && isFinite(x) ? x.toFixed(digits === undefined ? 2 : digits) : "–";
  }

  function setBusy(on, text) {
    busy = on;
    fileInput.disabled = on;
    drop.classList.toggle("loading", on);
    drop.setAttribute("aria-busy", on ? "true" : "false");
    document.body.classList.toggle("busy", on);
    statusEl.textContent = text || "";
  }

  function showError(message) {
    errorEl.textContent = message;
    errorEl.hidden = false;
  }

  function clearError() {
    errorEl.textContent = "";
    errorEl.hidden = true;
  }

  function applyHeatmapControls() {
    heatmap.hidden = !(hasCam && camToggle.checked);
    heatmap.style.opacity = String(Number(opacity.value) / 100);
    opacityValue.textContent = opacity.value + "%";
    opacity.disabled = !hasCam || !camToggle.checked;
  }

  function describeInput(info) {
    if (!info || typeof info !== "object") return "";
    var parts = [];
    if (info.format) parts.push(String(info.format));
    if (info.width && info.height) parts.push(info.width + "×" + info.height + " px");
    if (info.mode) parts.push(String(info.mode));
    if (info.frames && info.frames > 1) parts.push(info.frames + " frames");
    if (info.modality) parts.push("modality " + info.modality);
    if (info.body_part) parts.push("body part " + info.body_part);
    if (info.view_position) parts.push("view " + info.view_position);
    if (typeof info.patient_age_years === "number") parts.push("age " + fmt(info.patient_age_years, 1) + " y");
    return parts.length ? "Input: " + parts.join(" · ") : "";
  }

  function render(data, file) {
    var p = Number(data.probability), t = Number(data.threshold);
    var label = String(data.label || "");
    var abstained = data.abstain === true;

    $("file-name").textContent = data.filename || (file && file.name) || "";
    var labelEl = $("label");
    // no badge for what the model cannot judge: the probability stays below, in the details
    labelEl.textContent = abstained ? "no verdict: input outside what the model was trained on" : label;
    labelEl.className = "label " + (abstained ? "is-abstain" : label === "PNEUMONIA" ? "is-pneumonia" : label === "NORMAL" ? "is-normal" : "");

    $("probability").textContent = fmt(p);
    $("threshold").textContent = fmt(t);
    var clamp = function (x) { return Math.max(0, Math.min(1, isFinite(x) ? x : 0)); };
    $("prob-fill").style.width = (clamp(p) * 100).toFixed(2) + "%";
    $("prob-fill").classList.toggle("above", p >= t);
    $("threshold-marker").style.left = (clamp(t) * 100).toFixed(2) + "%";
    var bar = $("prob-bar");
    bar.setAttribute("aria-valuenow", String(clamp(p)));
    bar.setAttribute("aria-valuetext", fmt(p) + " (threshold " + fmt(t) + ")");

    var classProbs = $("class-probs");
    classProbs.textContent = "";
    var cp = data.class_probabilities || {};
    Object.keys(cp).forEach(function (name) {
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = name;
      dd.textContent = fmt(Number(cp[name]), 3);
      classProbs.appendChild(dt);
      classProbs.appendChild(dd);
    });

    var warnings = Array.isArray(data.warnings) ? data.warnings : [];
    var list = $("warnings");
    list.textContent = "";
    warnings.forEach(function (w) {
      var li = document.createElement("li");
      li.textContent = String(w);
      list.appendChild(li);
    });
    $("warnings-box").hidden = warnings.length === 0;

    $("input-info").textContent = describeInput(data.input);

    var cam = data.cam;
    var caption = $("image-caption");
    if (cam && cam.image_png) {
      image.src = "data:image/png;base64," + cam.image_png;
      caption.textContent = "The image as the model saw it" + (cam.heatmap_png ? ", with its Grad-CAM heatmap (" + (cam.scale || "relative evidence") + "; red: regions that raised the pneumonia score most)." : ".");
    } else if (file && /^image\/(jpeg|png)$/.test(file.type)) {
      image.src = URL.createObjectURL(file);
      caption.textContent = "Your image (no heatmap for this model).";
    } else {
      image.removeAttribute("src");
      caption.textContent = "No preview available for this file.";
    }
    if (cam && cam.heatmap_png) {
      heatmap.src = "data:image/png;base64," + cam.heatmap_png;
      hasCam = true;
      $("cam-controls").hidden = false;
    } else {
      heatmap.removeAttribute("src");
      hasCam = false;
      $("cam-controls").hidden = true;
    }
    applyHeatmapControls();

    result.hidden = false;
  }

  function errorMessage(response, body) {
    if (body && typeof body === "object" && body.error) return String(body.error);
    if (body && typeof body === "object" && body.detail) {
      return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
    return "The server answered " + response.status + " " + (response.statusText || "") + ".";
  }

  function send(file) {
    if (!file || busy) return;
    clearError();
    result.hidden = true;
    setBusy(true, "Analysing " + file.name + "…");
    var form = new FormData();
    form.append("file", file, file.name);
    fetch("/v1/predict?cam=true", { method: "POST", body: form })
      .then(function (response) {
        return response.text().then(function (text) {
          var body = null;
          try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
          if (!response.ok) throw new Error(errorMessage(response, body));
          if (!body || typeof body.probability !== "number") throw new Error("The server's answer was not a prediction.");
          return body;
        });
      })
      .then(function (data) {
        render(data, file);
        setBusy(false, "Done: " + file.name);
      })
      .catch(function (err) {
        var msg = err && err.message ? err.message : String(err);
        if (err instanceof TypeError) msg = "Could not reach the server (" + msg + ").";
        showError(msg);
        setBusy(false, "");
      })
      .then(function () {
        fileInput.value = "";  // choosing the same file again still triggers "change"
      });
  }

  fileInput.addEventListener("change", function () {
    if (fileInput.files && fileInput.files.length) send(fileInput.files[0]);
  });

  ["dragenter", "dragover"].forEach(function (type) {
    drop.addEventListener(type, function (event) {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
      drop.classList.add("dragover");
    });
  });
  ["dragleave", "dragend"].forEach(function (type) {
    drop.addEventListener(type, function (event) {
      if (event.type === "dragleave" && drop.contains(event.relatedTarget)) return;
      drop.classList.remove("dragover");
    });
  });
  drop.addEventListener("drop", function (event) {
    event.preventDefault();
    drop.classList.remove("dragover");
    var files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    if (files.length > 1) statusEl.textContent = "Only the first of " + files.length + " files is analysed.";
    send(files[0]);
  });
  // a file dropped beside the zone should not make the browser navigate away from the page
  window.addEventListener("dragover", function (event) { event.preventDefault(); });
  window.addEventListener("drop", function (event) { event.preventDefault(); });

  camToggle.addEventListener("change", applyHeatmapControls);
  opacity.addEventListener("input", applyHeatmapControls);

  fetch("/v1/model")
    .then(function (response) {
      if (!response.ok) throw new Error(String(response.status));
      return response.json();
    })
    .then(function (meta) {
      var parts = ["Model " + (meta.id || "?")];
      if (meta.architecture) parts.push(meta.architecture);
      if (typeof meta.image_size === "number") parts.push(meta.image_size + " px");
      if (typeof meta.threshold === "number") {
        parts.push("threshold " + fmt(meta.threshold, 3) + (meta.threshold_method ? " (" + meta.threshold_method + ")" : ""));
      }
      var vm = meta.val_metrics || {};
      var auc = vm.roc_auc !== undefined ? vm.roc_auc : vm.auroc !== undefined ? vm.auroc : vm.auc;
      if (typeof auc === "number") parts.push("validation AUROC " + fmt(auc, 3));
      if (meta.pneumo_version) parts.push("pneumo " + meta.pneumo_version);
      var site = meta.site_calibration;
      if (site) {
        var films = [];
        if (site.labelled_films) films.push(site.labelled_films + " labelled");
        if (site.unlabeled_films) films.push(site.unlabeled_films + " unlabelled");
        var when = site.created ? String(site.created).slice(0, 10) : "";
        var prevalence = typeof site.prevalence === "number" ? ", prevalence " + fmt(site.prevalence, 2) + " (" + site.prevalence_source + ")" : ", prevalence unknown";
        parts.push("calibrated to a site" + (when ? " on " + when : "") + " with " + (films.join(" and ") || "no") + " films" + prevalence);
      } else {
        parts.push("not calibrated to a site");
      }
      $("model-info").textContent = parts.join(" · ");
    })
    .catch(function () {
      $("model-info").textContent = "Model information unavailable.";
    });
})();
