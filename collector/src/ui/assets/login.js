// Sends the token once as `Authorization: Bearer`; the collector checks it
// like a query's and keeps it in an HttpOnly cookie for /ui. A token in the
// URL's fragment (/ui/login#token=...) is used and removed from the
// address at once: fragments never reach a server or its logs.
"use strict";
async function signIn(token) {
  const error = document.getElementById("error");
  error.textContent = "";
  const r = await fetch("/ui/login", {
    method: "POST",
    headers: { Authorization: "Bearer " + token.trim() },
    credentials: "same-origin",
  });
  if (r.ok) {
    location.replace("/ui");
  } else {
    error.textContent = "Refused (" + r.status + "): " + (r.headers.get("www-authenticate") || "");
  }
}
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn(document.getElementById("token").value);
  });
  const m = /^#token=(.+)$/.exec(location.hash);
  if (m) {
    history.replaceState(null, "", location.pathname);
    signIn(decodeURIComponent(m[1]));
  }
});
