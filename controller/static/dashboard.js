// IoTGuard dashboard: optional comfort only (the page works without it). Times in the browser's zone,
// the alert filter's time zone, and a refresh of the parts marked data-live every data-refresh seconds.
"use strict";
(function () {
  function pad(n) { return String(n).padStart(2, "0"); }

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var when = new Date(t.getAttribute("datetime"));
      if (!isNaN(when)) { t.title = t.getAttribute("datetime"); t.textContent = when.toLocaleString(); }
    });
  }

  // datetime-local fields carry no zone: tell the server ours, and show its UTC values in ours.
  function localInputs() {
    document.querySelectorAll("input[name=tz]").forEach(function (i) { i.value = String(new Date().getTimezoneOffset()); });
    document.querySelectorAll("input[type=datetime-local][data-ts]").forEach(function (i) {
      var d = new Date(Number(i.dataset.ts) * 1000);
      i.value = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
    });
  }

  function busy() {  // someone is typing in a form: do not pull the page from under them
    var a = document.activeElement;
    return a && a.closest && a.closest("form") !== null && a.tagName !== "BUTTON";
  }

  function refresh() {
    if (document.hidden || busy()) { return; }
    fetch(location.href, { credentials: "same-origin" }).then(function (r) {
      if (r.redirected || r.status === 401) { location.reload(); return null; }  // session over: the login page
      return r.ok ? r.text() : null;
    }).then(function (text) {
      if (!text) { return; }
      var fresh = new DOMParser().parseFromString(text, "text/html");
      document.querySelectorAll("[data-live]").forEach(function (old) {
        var part = fresh.getElementById(old.id);
        if (!part) { return; }
        var open = Array.prototype.map.call(old.querySelectorAll("details[open]"), function (d) { return d.id; });
        part = document.adoptNode(part);
        part.querySelectorAll("details[id]").forEach(function (d) { if (open.indexOf(d.id) >= 0) { d.open = true; } });
        old.replaceWith(part);
        localTimes(part);
      });
    }).catch(function () { /* offline for a moment: try again next time */ });
  }

  localTimes(document);
  localInputs();
  var seconds = Number(document.body.dataset.refresh || 0);
  if (seconds > 0) { setInterval(refresh, seconds * 1000); }
})();
