// Meepo's small enhancements. Every page works without them: the photo form is a plain
// multipart form and gallery thumbnails are links to the full photos.
(function () {
  "use strict";

  function firstImage(files) {
    for (const file of files || []) {
      if (file.type.startsWith("image/")) return file;
    }
    return null;
  }

  function setUpPhotoSearch(form) {
    const input = form.querySelector("[data-photo-input]");
    const preview = form.querySelector("[data-photo-preview]");
    const button = form.querySelector("[data-photo-submit]");
    const spinner = form.querySelector("[data-photo-spinner]");
    if (!input) return null;

    function showPreview(file) {
      if (!preview) return;
      if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
    }

    // Drop and paste hand over a File; a DataTransfer is the only way to put it into a file
    // input, so the form still submits an ordinary multipart upload.
    function searchWith(file) {
      const transfer = new DataTransfer();
      transfer.items.add(file);
      input.files = transfer.files;
      showPreview(file);
      form.requestSubmit();
    }

    input.addEventListener("change", function () {
      const file = firstImage(input.files);
      if (file) {
        showPreview(file);
        form.requestSubmit();
      }
    });

    form.addEventListener("submit", function () {
      if (button) {
        button.classList.add("btn-disabled");
        button.setAttribute("aria-busy", "true");
      }
      if (spinner) spinner.classList.remove("hidden");
    });

    // Back from the results page (bfcache): the form must be usable again.
    window.addEventListener("pageshow", function () {
      if (button) {
        button.classList.remove("btn-disabled");
        button.removeAttribute("aria-busy");
      }
      if (spinner) spinner.classList.add("hidden");
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

    return { form: form, searchWith: searchWith };
  }

  function setUpPageWideDropAndPaste(photo) {
    // A photo dropped anywhere on the page searches too, instead of the browser opening the file.
    document.addEventListener("dragover", function (event) {
      event.preventDefault();
    });
    document.addEventListener("drop", function (event) {
      event.preventDefault();
      const file = firstImage(event.dataTransfer && event.dataTransfer.files);
      if (file) photo.searchWith(file);
    });
    document.addEventListener("paste", function (event) {
      const file = firstImage(event.clipboardData && event.clipboardData.files);
      // Text pasted into a field stays ordinary text.
      if (!file) return;
      event.preventDefault();
      photo.searchWith(file);
    });
  }

  function setUpGallery(gallery) {
    const main = gallery.querySelector("[data-gallery-main]");
    if (!main) return;
    gallery.querySelectorAll("[data-gallery-thumb]").forEach(function (thumb) {
      thumb.addEventListener("click", function (event) {
        event.preventDefault();
        main.src = thumb.dataset.full;
        gallery.querySelectorAll("[data-gallery-thumb]").forEach(function (other) {
          other.removeAttribute("aria-current");
        });
        thumb.setAttribute("aria-current", "true");
      });
    });
  }

  function setUpAutosubmit(select) {
    const form = select.form;
    const button = form.querySelector("[data-autosubmit-button]");
    if (button) button.hidden = true;
    select.addEventListener("change", function () {
      form.requestSubmit();
    });
  }

  const photoForm = document.querySelector("[data-photo-form]");
  const photo = photoForm && setUpPhotoSearch(photoForm);
  if (photo) setUpPageWideDropAndPaste(photo);
  document.querySelectorAll("[data-gallery]").forEach(setUpGallery);
  document.querySelectorAll("select[data-autosubmit]").forEach(setUpAutosubmit);
})();
