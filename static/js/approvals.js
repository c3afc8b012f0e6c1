/*
 * Approvals queue: show a refused decision's form (4xx answer marked X-Decision-Error) in place
 * of the row's slot instead of dropping it, as htmx does with error responses by default.
 */
(function () {
  "use strict";
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var xhr = evt.detail.xhr;
    if (xhr && xhr.status >= 400 && xhr.getResponseHeader("X-Decision-Error")) {
      var form = evt.detail.requestConfig && evt.detail.requestConfig.elt;
      var slot = form && form.closest ? form.closest("td") : null;
      if (slot) {
        evt.detail.shouldSwap = true;
        evt.detail.isError = false;
        evt.detail.target = slot;
        evt.detail.swapOverride = "innerHTML";
      }
    }
  });
})();
