-- Metrics and traces for the people who run it (SPEC 20): a balanced app, a Prometheus scrape
-- target on a listener of its own, the JSON access log with trace ids, and the trace id handed
-- to the client so a support ticket can name it.
local mg = require "moongate"
mg.listen("127.0.0.1:8080")
mg.listen("127.0.0.1:9145") -- the scrape listener: keep it off the public network
mg.workers(2)
mg.set {
  access_log = "access.log", access_log_format = "json", -- each line has trace_id and span_id
  histogram_buckets = { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 },
  tracing = true, -- the default: traceparent continued or started, passed to the app
}
mg.balancer("app", { members = { "scgi://localhost:4000", "scgi://localhost:4001" } })
mg.route("/", "balancer://app/", { hooks = {
  header_filter = function(req, res) res.headers["X-Trace-Id"] = ngx.var.trace_id end,
} })
-- /metrics answers only on the scrape listener (Prometheus: params { format = ["prometheus"] }).
mg.route("=/metrics", mg.status_handler(), { hooks = {
  access = function(req) if ngx.var.server_port ~= "9145" then return req:exit(404) end end,
} })
