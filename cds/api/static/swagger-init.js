// Starts Swagger UI on /docs (cds.api.routes.docs). A file of the node rather than
// an inline script, so that the page's Content-Security-Policy allows scripts from
// the node only; Swagger UI itself comes from the fastapi-offline package.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  // its badge would ask validator.swagger.io: nothing is loaded from outside the node
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
