// Starts ReDoc on /redoc (cds.api.routes.docs). ReDoc styles itself at run time: its
// style elements must carry the nonce the page's Content-Security-Policy allows,
// which the page hands over in a meta element (a nonce attribute reads back empty).
"use strict";
var nonce = document.querySelector('meta[name="cds-style-nonce"]').content;
Redoc.init("/openapi.json", { nonce: nonce }, document.getElementById("redoc"));
