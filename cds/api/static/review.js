// The review page's one script: a finding whose picture cannot be drawn shows the
// "no preview" note after it instead. Listening on the document while the head is
// read catches the error of every image, however early it comes; an inline
// onerror= would need the Content-Security-Policy to allow inline script.
"use strict";
document.addEventListener(
  "error",
  function (event) {
    var img = event.target;
    if (img instanceof HTMLImageElement && img.classList.contains("preview")) {
      img.hidden = true;
      var note = img.nextElementSibling;
      if (note !== null) {
        note.hidden = false;
      }
    }
  },
  true
);
