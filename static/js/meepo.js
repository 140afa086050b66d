// Meepo's small enhancements. Every page works without them: the photo form is a plain
// multipart form and gallery thumbnails are links to the full photos. The box tool (searching
// with part of a photo) needs them.
(function () {
  "use strict";

  // The server refuses smaller boxes (search/queries.py MIN_BOX_SIDE).
  const MIN_BOX_SIDE = 16;
  // A press that moves less than this (CSS pixels) is a click, not a drag: it keeps the box.
  const DRAG_THRESHOLD = 4;
  // Arrow keys move the box by this share of the photo.
  const KEY_STEP = 0.02;

  function firstImage(files) {
    for (const file of files || []) {
      if (file.type.startsWith("image/")) return file;
    }
    return null;
  }

  // As the server's messages write sizes (Django's filesizeformat).
  function megabytes(bytes) {
    return (bytes / (1024 * 1024)).toFixed(1) + " MB";
  }

  function clamp(value, low, high) {
    return Math.min(Math.max(value, low), high);
  }

  // The box tool: draw a box over a photo by dragging, move it by dragging inside it, resize it by
  // its corner handles (or draw a new one), with a mouse, a finger or a pen alike (pointer
  // events). The box is kept in the photo's natural pixels. Browsers display photos with their
  // EXIF orientation applied and report naturalWidth/naturalHeight the same way, which is how the
  // server reads the box too.
  //
  // onChange(value, state) gets "x,y,w,h" in whole pixels, or "" while there is no box or the box
  // is smaller than MIN_BOX_SIDE on a side; state is "none", "too-small" or "ready".
  function createBoxTool(frame, image, onChange) {
    const layer = document.createElement("div");
    layer.dataset.boxLayer = "";
    layer.tabIndex = 0;
    layer.setAttribute("role", "group");
    layer.setAttribute(
      "aria-label",
      "Photo: drag to draw a box around the part to search with. " +
        "Arrow keys move the box, Shift with the arrow keys resizes it, Escape removes it.",
    );
    const element = document.createElement("div");
    element.dataset.box = "";
    element.hidden = true;
    for (const corner of ["nw", "ne", "sw", "se"]) {
      const handle = document.createElement("span");
      handle.dataset.boxHandle = corner;
      element.appendChild(handle);
    }
    layer.appendChild(element);
    frame.appendChild(layer);
    // Says where the box is, for those who cannot see it: after each key press and each drag.
    const status = document.createElement("p");
    status.dataset.boxStatus = "";
    status.className = "sr-only";
    status.setAttribute("aria-live", "polite");
    frame.appendChild(status);

    let box = null;
    let drag = null;

    function size() {
      return { width: image.naturalWidth || 1, height: image.naturalHeight || 1 };
    }

    function pointAt(event) {
      const rect = layer.getBoundingClientRect();
      const { width, height } = size();
      return {
        x: clamp((event.clientX - rect.left) / rect.width, 0, 1) * width,
        y: clamp((event.clientY - rect.top) / rect.height, 0, 1) * height,
      };
    }

    function spanning(a, b) {
      return { x: Math.min(a.x, b.x), y: Math.min(a.y, b.y), w: Math.abs(a.x - b.x), h: Math.abs(a.y - b.y) };
    }

    function pixels() {
      if (!box) return null;
      const { width, height } = size();
      const x = clamp(Math.round(box.x), 0, width);
      const y = clamp(Math.round(box.y), 0, height);
      return { x: x, y: y, w: Math.min(Math.round(box.w), width - x), h: Math.min(Math.round(box.h), height - y) };
    }

    function update() {
      const found = pixels();
      let state = "none";
      if (found) state = found.w >= MIN_BOX_SIDE && found.h >= MIN_BOX_SIDE ? "ready" : "too-small";
      element.hidden = !box;
      if (box) {
        const { width, height } = size();
        element.style.left = (100 * box.x) / width + "%";
        element.style.top = (100 * box.y) / height + "%";
        element.style.width = (100 * box.w) / width + "%";
        element.style.height = (100 * box.h) / height + "%";
        element.classList.toggle("is-too-small", state === "too-small");
      }
      onChange(state === "ready" ? [found.x, found.y, found.w, found.h].join(",") : "", state);
    }

    function announce() {
      const found = pixels();
      status.textContent = found
        ? `Box ${found.w}×${found.h} at ${found.x}, ${found.y}; arrows move, Shift+arrows resize`
        : "No box";
    }

    layer.addEventListener("pointerdown", function (event) {
      if (event.button !== 0 || !image.naturalWidth) return;
      event.preventDefault();
      layer.focus({ preventScroll: true });
      layer.setPointerCapture(event.pointerId);
      const start = pointAt(event);
      const corner = event.target.dataset.boxHandle;
      if (corner && box) {
        // Resizing is drawing again from the opposite corner.
        const anchor = {
          x: corner.includes("w") ? box.x + box.w : box.x,
          y: corner.includes("n") ? box.y + box.h : box.y,
        };
        drag = { kind: "draw", anchor: anchor, moved: true };
      } else if (event.target === element) {
        drag = { kind: "move", start: start, from: Object.assign({}, box), moved: false };
      } else {
        drag = { kind: "draw", anchor: start, moved: false };
      }
      drag.pointerId = event.pointerId;
      drag.clientX = event.clientX;
      drag.clientY = event.clientY;
    });

    layer.addEventListener("pointermove", function (event) {
      if (!drag || event.pointerId !== drag.pointerId) return;
      if (!drag.moved) {
        drag.moved = Math.hypot(event.clientX - drag.clientX, event.clientY - drag.clientY) >= DRAG_THRESHOLD;
        if (!drag.moved) return;
      }
      const point = pointAt(event);
      if (drag.kind === "draw") {
        box = spanning(drag.anchor, point);
      } else {
        const { width, height } = size();
        box = {
          x: clamp(drag.from.x + point.x - drag.start.x, 0, width - drag.from.w),
          y: clamp(drag.from.y + point.y - drag.start.y, 0, height - drag.from.h),
          w: drag.from.w,
          h: drag.from.h,
        };
      }
      update();
    });

    function endDrag(event) {
      if (!drag || event.pointerId !== drag.pointerId) return;
      if (drag.moved) announce();
      drag = null;
    }
    layer.addEventListener("pointerup", endDrag);
    layer.addEventListener("pointercancel", endDrag);

    layer.addEventListener("keydown", function (event) {
      const { width, height } = size();
      const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
      if (event.key === "Escape" && box) {
        box = null;
      } else if ((event.key === "Enter" || event.key === " ") && !box) {
        box = { x: width / 4, y: height / 4, w: width / 2, h: height / 2 };
      } else if (arrows[event.key] && box) {
        const [dx, dy] = arrows[event.key].map(function (step) {
          return step * KEY_STEP;
        });
        if (event.shiftKey) {
          box.w = clamp(box.w + dx * width, 1, width - box.x);
          box.h = clamp(box.h + dy * height, 1, height - box.y);
        } else {
          box.x = clamp(box.x + dx * width, 0, width - box.w);
          box.y = clamp(box.y + dy * height, 0, height - box.h);
        }
      } else {
        return;
      }
      event.preventDefault();
      update();
      announce();
    });

    return {
      clear: function () {
        box = null;
        drag = null;
        update();
      },
      remove: function () {
        layer.remove();
        status.remove();
      },
      focus: function () {
        layer.focus({ preventScroll: true });
      },
    };
  }

  // Shows the box tool's state: the hidden field, the "too small" hint, the buttons that need a box.
  function boxControls(root, field) {
    const hint = root.querySelector("[data-box-hint]");
    const clear = root.querySelector("[data-box-clear]");
    const needBox = root.querySelectorAll("[data-needs-box]");
    return function (value, state) {
      field.value = value;
      if (hint) hint.hidden = state !== "too-small";
      if (clear) clear.disabled = state === "none";
      needBox.forEach(function (button) {
        button.disabled = state !== "ready";
      });
      root.classList.toggle("has-box", state === "ready");
    };
  }

  function showBusy(button) {
    if (!button) return;
    button.classList.add("btn-disabled");
    button.setAttribute("aria-busy", "true");
    const spinner = button.querySelector("[data-spinner]");
    if (spinner) spinner.classList.remove("hidden");
  }

  function clearBusy(root) {
    root.querySelectorAll("[aria-busy]").forEach(function (button) {
      button.classList.remove("btn-disabled");
      button.removeAttribute("aria-busy");
    });
    root.querySelectorAll("[data-spinner]").forEach(function (spinner) {
      spinner.classList.add("hidden");
    });
  }

  function setUpPhotoSearch(form) {
    const input = form.querySelector("[data-photo-input]");
    const stage = form.querySelector("[data-photo-stage]");
    const frame = form.querySelector("[data-photo-frame]");
    const preview = form.querySelector("[data-photo-preview]");
    const field = form.querySelector("input[name=box]");
    const whole = form.querySelector("[data-photo-submit]");
    const wholeLabel = form.querySelector("[data-photo-submit-label]");
    const region = form.querySelector("[data-region-submit]");
    const problem = form.querySelector("[data-photo-problem]");
    const note = form.querySelector("[data-photo-note]");
    if (!input || !stage || !frame || !preview || !field || !problem) return null;
    const maxBytes = Number(input.dataset.maxBytes) || Infinity;

    const show = boxControls(form, field);
    let box = "";
    const tool = createBoxTool(frame, preview, function (value, state) {
      box = value;
      show(value, state);
      // With a box, searching with it is what the shopper most likely wants next.
      if (region) region.classList.toggle("btn-outline", state !== "ready");
      if (whole) whole.classList.toggle("btn-outline", state === "ready");
    });

    preview.addEventListener("load", function () {
      frame.style.setProperty("--w", preview.naturalWidth);
      frame.style.setProperty("--h", preview.naturalHeight);
      tool.clear();
    });

    // Not a photo, or one the browser cannot decode: no box to draw on it. The file stays chosen,
    // for the server has the last word (it reads TIFF, which browsers cannot show).
    preview.addEventListener("error", function () {
      showStage(false);
      if (shown && isTiff(shown)) {
        // Chromium and Firefox cannot show TIFF; the server reads it, so this is no error.
        tell("No preview for TIFF photos; you can still search with it.");
      } else {
        say("This file is not a photo we can read. Choose a JPEG, PNG, WebP or GIF photo.");
      }
    });

    function isTiff(file) {
      return file.type === "image/tiff" || /\.tiff?$/i.test(file.name);
    }

    function say(message) {
      problem.textContent = message;
      problem.hidden = !message;
    }

    function tell(message) {
      if (!note) return;
      note.textContent = message;
      note.hidden = !message;
    }

    function showStage(showing) {
      stage.hidden = !showing;
      if (region) region.hidden = !showing;
      if (wholeLabel) wholeLabel.textContent = showing ? "Search whole photo" : "Search by photo";
      if (!showing) tool.clear();
    }

    // The file on show, so that a visit back to the page finds out whether the browser put another
    // one into the input (it restores the input after this script has run).
    let shown = null;

    function showPreview(file) {
      if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
      const tooLarge = file && file.size > maxBytes;
      // Refused here rather than after the whole upload, with an error page instead of the form.
      if (tooLarge) input.value = "";
      shown = tooLarge ? null : file;
      const limit = megabytes(maxBytes);
      tell("");
      say(tooLarge ? `This photo is ${megabytes(file.size)}: photos can be up to ${limit}. Choose a smaller one.` : "");
      if (shown) {
        preview.src = URL.createObjectURL(shown);
      } else {
        preview.removeAttribute("src");
      }
      showStage(Boolean(shown));
      return Boolean(shown);
    }

    // Scrolls to what the shopper needs to see next: the photo once it has loaded, or what is wrong
    // with the file. An opening <details> grows over a short transition (daisyUI's collapse):
    // scrolled to before it has grown, the photo would stay out of sight below the end of the page.
    function reveal(details) {
      const growing = details ? details.getAnimations({ subtree: true }) : [];
      const waits = growing.map(function (animation) {
        return animation.finished;
      });
      if (!stage.hidden) {
        waits.push(
          new Promise(function (settled) {
            preview.addEventListener("load", settled, { once: true });
            preview.addEventListener("error", settled, { once: true });
          }),
        );
      }
      Promise.allSettled(waits).then(function () {
        let shownNext = stage;
        if (stage.hidden) shownNext = note && !note.hidden ? note : problem;
        shownNext.scrollIntoView({ block: "nearest", behavior: "smooth" });
      });
    }

    // Drop and paste hand over a File; a DataTransfer is the only way to put it into a file
    // input, so the form still submits an ordinary multipart upload.
    function choose(file) {
      if (showPreview(file)) {
        const transfer = new DataTransfer();
        transfer.items.add(file);
        input.files = transfer.files;
      }
      const details = form.closest("details");
      if (details) details.open = true;
      reveal(details);
    }

    input.addEventListener("change", function () {
      showPreview(input.files[0] || null);
      reveal(null);
    });

    // A box drawn with a finger on a phone leaves the button that searches with it below the fold.
    // Not while drawing: scrolling then would move the photo under the finger.
    frame.addEventListener("pointerup", function () {
      if (region && !region.disabled) region.scrollIntoView({ block: "nearest", behavior: "smooth" });
    });

    form.querySelectorAll("[data-box-clear]").forEach(function (button) {
      button.addEventListener("click", tool.clear);
    });

    form.addEventListener("submit", function (event) {
      // "Search whole photo" ignores a box drawn on the photo.
      field.value = event.submitter === whole ? "" : box;
      showBusy(event.submitter || whole);
    });

    window.addEventListener("pageshow", function () {
      // Back from the results page (bfcache): the form must be usable again.
      clearBusy(form);
      // The browser may have kept the chosen file across a reload or a visit back.
      const file = input.files[0] || null;
      if (file !== shown) showPreview(file);
    });

    let depth = 0;
    form.addEventListener("dragenter", function (event) {
      event.preventDefault();
      depth += 1;
      form.classList.add("is-dragging");
    });
    form.addEventListener("dragleave", function () {
      depth = Math.max(0, depth - 1);
      if (depth === 0) form.classList.remove("is-dragging");
    });
    form.addEventListener("drop", function () {
      depth = 0;
      form.classList.remove("is-dragging");
    });
    form.addEventListener("dragover", function (event) {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
    });

    return { form: form, choose: choose };
  }

  function setUpPageWideDropAndPaste(photo) {
    // A photo dropped anywhere on the page goes to the photo search, instead of the browser
    // opening the file.
    document.addEventListener("dragover", function (event) {
      event.preventDefault();
    });
    document.addEventListener("drop", function (event) {
      event.preventDefault();
      const file = firstImage(event.dataTransfer && event.dataTransfer.files);
      if (file) photo.choose(file);
    });
    document.addEventListener("paste", function (event) {
      const file = firstImage(event.clipboardData && event.clipboardData.files);
      // Text pasted into a field stays ordinary text.
      if (!file) return;
      event.preventDefault();
      photo.choose(file);
    });
  }

  // The item page: thumbnails replace the main photo; the outline of a matched region shows only
  // on the photo it belongs to; "Find items like this part" draws a box on the main photo.
  function setUpGallery(gallery) {
    const main = gallery.querySelector("[data-gallery-main]");
    if (!main) return;
    const frame = gallery.querySelector("[data-gallery-frame]");
    const outline = gallery.querySelector("[data-outline]");
    const partForm = gallery.querySelector("[data-part-search]");
    const start = document.querySelector("[data-part-search-start]");
    let tool = null;

    gallery.querySelectorAll("[data-gallery-thumb]").forEach(function (thumb) {
      thumb.addEventListener("click", function (event) {
        event.preventDefault();
        main.src = thumb.dataset.full;
        if (frame && Number(thumb.dataset.width) && Number(thumb.dataset.height)) {
          frame.style.setProperty("--w", thumb.dataset.width);
          frame.style.setProperty("--h", thumb.dataset.height);
        }
        if (outline) outline.hidden = outline.dataset.imageId !== thumb.dataset.imageId || Boolean(tool);
        if (partForm) partForm.elements.item_image.value = thumb.dataset.imageId;
        if (tool) tool.clear();
        gallery.querySelectorAll("[data-gallery-thumb]").forEach(function (other) {
          other.removeAttribute("aria-current");
        });
        thumb.setAttribute("aria-current", "true");
      });
    });

    if (!frame || !partForm || !start) return;
    const show = boxControls(partForm, partForm.elements.box);
    const outlineWasShown = outline && !outline.hidden;

    function begin() {
      if (tool) return;
      partForm.hidden = false;
      start.setAttribute("aria-expanded", "true");
      if (outline) outline.hidden = true;
      tool = createBoxTool(frame, main, show);
      tool.clear();
      frame.scrollIntoView({ block: "nearest", behavior: "smooth" });
      tool.focus();
    }

    function end() {
      if (!tool) return;
      tool.remove();
      tool = null;
      show("", "none");
      partForm.hidden = true;
      start.setAttribute("aria-expanded", "false");
      const current = gallery.querySelector("[data-gallery-thumb][aria-current=true]");
      if (outline) outline.hidden = current ? outline.dataset.imageId !== current.dataset.imageId : !outlineWasShown;
      start.focus();
    }

    start.hidden = false;
    start.addEventListener("click", function () {
      if (tool) end();
      else begin();
    });
    partForm.querySelectorAll("[data-part-search-cancel]").forEach(function (button) {
      button.addEventListener("click", end);
    });
    partForm.querySelectorAll("[data-box-clear]").forEach(function (button) {
      button.addEventListener("click", function () {
        if (tool) tool.clear();
      });
    });
    partForm.addEventListener("submit", function (event) {
      showBusy(event.submitter);
    });
    window.addEventListener("pageshow", function () {
      clearBusy(partForm);
    });
  }

  function setUpAutosubmit(control) {
    const form = control.form;
    const button = form.querySelector("[data-autosubmit-button]");
    if (button) button.hidden = true;
    control.addEventListener("change", function () {
      form.requestSubmit();
    });
    // Back to a page from the back-forward cache, the controls still show the choice that left it;
    // the server rendered the URL's choices as their defaults.
    window.addEventListener("pageshow", function () {
      form.reset();
    });
  }

  const photoForm = document.querySelector("[data-photo-form]");
  const photo = photoForm && setUpPhotoSearch(photoForm);
  if (photo) setUpPageWideDropAndPaste(photo);
  document.querySelectorAll("[data-gallery]").forEach(setUpGallery);
  document.querySelectorAll("[data-autosubmit]").forEach(setUpAutosubmit);
})();
