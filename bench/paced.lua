-- wrk script: each connection waits 10 ms after every response before its next request, so
-- the offered rate is about connections x 100 per second, independent of the server.
function delay()
  return 10
end
