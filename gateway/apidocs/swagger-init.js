// Swagger UI's start, in a file of its own: the Content-Security-Policy runs no inline script.
// No validator badge: it is an image from swagger.io, and nothing here loads from elsewhere.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
});
