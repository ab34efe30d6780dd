// Starts Swagger UI on this service's OpenAPI document.  A file, not an inline script:
// the page's CSP runs scripts from this origin only.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#swagger-ui",
  // BaseLayout, not StandaloneLayout: the standalone top bar's logo has an inline <style>
  // element that the CSP (style-src 'self') refuses.
  layout: "BaseLayout",
  deepLinking: true,
  // No validity badge: it would be fetched from validator.swagger.io.
  validatorUrl: null,
});
