// Shows, as the user types, which of the password rules the new password meets. The
// server checks every rule again; this only helps.
(function () {
  "use strict";
  var form = document.getElementById("password-form");
  if (!form) { return; }
  var password = document.getElementById("password");
  var confirm = document.getElementById("confirm");
  var min = parseInt(form.dataset.minLength, 10) || 0;
  var minClasses = parseInt(form.dataset.minClasses, 10) || 0;
  function classes(text) {
    var found = { lower: false, upper: false, digit: false, symbol: false };
    for (var ch of text) {
      if (ch.toLowerCase() !== ch.toUpperCase()) {
        if (ch === ch.toLowerCase()) { found.lower = true; } else { found.upper = true; }
      } else if (/\p{Nd}/u.test(ch)) { found.digit = true; } else { found.symbol = true; }
    }
    return Object.values(found).filter(Boolean).length;
  }
  function mark(rule, met) {
    var item = form.querySelector('[data-rule="' + rule + '"]');
    if (item) { item.classList.toggle("met", met); }
  }
  function update() {
    var value = password.value;
    mark("length", Array.from(value).length >= min);
    mark("classes", classes(value) >= minClasses);
    mark("match", value.length > 0 && value === confirm.value);
  }
  password.addEventListener("input", update);
  confirm.addEventListener("input", update);
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }
})();
