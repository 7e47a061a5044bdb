// The end of a sign-in with the identity provider (GET /v1/auth/callback): keep the ID token for
// this tab (sessionStorage, as an access token typed in is kept) and open the Command Center
// where the person was. The refresh token stays in an HttpOnly cookie this script never sees.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("signin").textContent);
  sessionStorage.setItem("interlock.token", data.id_token);
  sessionStorage.setItem("interlock.expires", String(data.expires_at));
  sessionStorage.setItem("interlock.via", "oidc");
  const back = sessionStorage.getItem("interlock.return") || "";
  sessionStorage.removeItem("interlock.return");
  location.replace("/" + (back.startsWith("#") ? back : ""));
})();
