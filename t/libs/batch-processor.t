# apisix.utils.batch-processor and batch-processor-manager (moongate's own), apisix.timers and
# apisix.utils.rfc5424: batches by size, the flush once entries stop coming, retries then the
# drop with APISIX's log lines, partial failures, the manager's per-conf processors and its
# stale-processor sweep. Every wait polls a condition with a deadline; nothing is timed.
use Test::Nginx::Socket::Lua;

repeat_each(1);
no_long_string();
log_level('debug');

add_block_preprocessor(sub {
    my ($block) = @_;
    $block->set_value("request", "GET /t") if !defined $block->request;
    $block->set_value("no_error_log", "[error]")
        if !defined $block->no_error_log && !defined $block->error_log;
});

run_tests;

__DATA__

=== TEST 1: a batch goes out when it reaches batch_max_size; process_buffer sends the rest
--- config
    location /t {
        content_by_lua_block {
            local bp = require("apisix.utils.batch-processor")
            local sizes = {}
            local p = assert(bp:new(function(entries, max)
                sizes[#sizes + 1] = #entries .. "/" .. max
                return true
            end, { name = "by size", batch_max_size = 3, inactive_timeout = 60 }))
            for i = 1, 7 do
                p:push({ n = i })
            end
            local deadline = ngx.now() + 5
            while #sizes < 2 and ngx.now() < deadline do
                ngx.sleep(0.02)
            end
            ngx.say(table.concat(sizes, " "))
            p:process_buffer()
            while #sizes < 3 and ngx.now() < deadline do
                ngx.sleep(0.02)
            end
            ngx.say(table.concat(sizes, " "))
        }
    }
--- response_body
3/3 3/3
3/3 3/3 1/3
--- error_log
Batch Processor[by size] batch max size has exceeded
Batch Processor[by size] successfully processed the entries



=== TEST 2: entries that stop coming go out after inactive_timeout, not before
--- config
    location /t {
        content_by_lua_block {
            local bp = require("apisix.utils.batch-processor")
            local got
            local p = assert(bp:new(function(entries)
                got = entries
                return true
            end, { name = "quiet", batch_max_size = 100, inactive_timeout = 1 }))
            p:push("a")
            p:push("b")
            -- no yield since the pushes: no timer could have run
            ngx.say("before: ", tostring(got))
            local deadline = ngx.now() + 5
            while not got and ngx.now() < deadline do
                ngx.sleep(0.05)
            end
            ngx.say("after: ", got and table.concat(got, ","))
        }
    }
--- response_body
before: nil
after: a,b
--- error_log
Batch Processor[quiet] buffer duration exceeded, activating buffer flush



=== TEST 3: a failing batch is retried max_retry_count times, then dropped with APISIX's lines
--- config
    location /t {
        content_by_lua_block {
            local bp = require("apisix.utils.batch-processor")
            local calls = 0
            local p = assert(bp:new(function(entries)
                calls = calls + 1
                return false, "server down " .. calls
            end, { name = "retry test", batch_max_size = 1, max_retry_count = 2,
                   retry_delay = 0 }))
            p:push("x")
            local deadline = ngx.now() + 5
            while calls < 3 and ngx.now() < deadline do
                ngx.sleep(0.02)
            end
            -- a fourth attempt would come at once (retry_delay 0): give it the chance
            ngx.sleep(0.2)
            ngx.say("calls: ", calls)
        }
    }
--- response_body
calls: 3
--- error_log
Batch Processor[retry test] failed to process entries: server down 1
Batch Processor[retry test] failed to process entries: server down 3
Batch Processor[retry test] exceeded the max_retry_count[3] dropping the entries



=== TEST 4: a partial failure retries only the entries from the first failed one on
--- config
    location /t {
        content_by_lua_block {
            local bp = require("apisix.utils.batch-processor")
            local seen = {}
            local p = assert(bp:new(function(entries)
                seen[#seen + 1] = table.concat(entries, ",")
                if #seen == 1 then
                    return false, "third refused", 3
                end
                return true
            end, { name = "partial", batch_max_size = 5, max_retry_count = 1,
                   retry_delay = 0 }))
            for _, e in ipairs({ "a", "b", "c", "d", "e" }) do
                p:push(e)
            end
            local deadline = ngx.now() + 5
            while #seen < 2 and ngx.now() < deadline do
                ngx.sleep(0.02)
            end
            ngx.say(table.concat(seen, " | "))
        }
    }
--- response_body
a,b,c,d,e | c,d,e
--- error_log
Batch Processor[partial] failed to process entries [3/5]: third refused
--- no_error_log
dropping the entries



=== TEST 5: new() checks the config and the sender
--- config
    location /t {
        content_by_lua_block {
            local bp = require("apisix.utils.batch-processor")
            local p, err = bp:new(function() end, { batch_max_size = 0 })
            ngx.say(tostring(p), " ", err)
            p, err = bp:new("not a function", {})
            ngx.say(tostring(p), " ", err)
            local conf = {}
            p = bp:new(function() end, conf)
            ngx.say(conf.name, " ", conf.batch_max_size, " ", conf.inactive_timeout, " ",
                    conf.buffer_duration, " ", conf.max_retry_count, " ", conf.retry_delay)
        }
    }
--- response_body
nil property "batch_max_size" validation failed: expected 0 to be at least 1
nil Invalid argument, arg #1 must be a function
log buffer 1000 5 60 0 1



=== TEST 6: the manager: schema fields, one processor per conf content, pushes counted
--- config
    location /t {
        content_by_lua_block {
            local core = require("apisix.core")
            local manager = require("apisix.utils.batch-processor-manager")
            local m = manager.new("fixture logger")
            local schema = m:wrap_schema({
                type = "object",
                properties = { uri = { type = "string" }, batch_max_size = { type = "integer",
                    minimum = 1, default = 7 } },
            })
            local conf = { uri = "http://x" }
            assert(core.schema.check(schema, conf))
            ngx.say(conf.name, " ", conf.batch_max_size, " ", conf.inactive_timeout)

            local sent = {}
            local function sender(entries)
                for _, e in ipairs(entries) do
                    sent[#sent + 1] = e
                end
                return true
            end
            local ctx = { var = { route_id = "1", server_addr = "127.0.0.1" } }
            ngx.say("first add: ", m:add_entry(conf, "e1"))
            ngx.say("new processor: ", m:add_entry_to_new_processor(conf, "e1", ctx, sender))
            -- an equal conf (another table) shares the processor
            local twin = core.table.deepcopy(conf)
            ngx.say("twin add: ", m:add_entry(twin, "e2"))
            ngx.say("pushed: ", m.total_pushed_entries)
            local deadline = ngx.now() + 5
            while #sent < 2 and ngx.now() < deadline do
                m.processors[next(m.processors)]:process_buffer()
                ngx.sleep(0.02)
            end
            ngx.say(table.concat(sent, ","))
        }
    }
--- response_body
fixture logger 7 5
first add: false
new processor: true
twin add: true
pushed: 2
e1,e2



=== TEST 7: processors with nothing queued are forgotten by the stale sweep
--- config
    location /t {
        content_by_lua_block {
            local manager = require("apisix.utils.batch-processor-manager")
            manager.set_check_stale_interval(1)
            local m = manager.new("sweep")
            local conf = { name = "sweep", batch_max_size = 1, inactive_timeout = 5,
                           buffer_duration = 60, max_retry_count = 0, retry_delay = 1 }
            local done = 0
            m:add_entry_to_new_processor(conf, "only", { var = {} }, function(entries)
                done = done + #entries
                return true
            end)
            local deadline = ngx.now() + 5
            while next(m.processors) and ngx.now() < deadline do
                ngx.sleep(0.05)
            end
            manager.set_check_stale_interval(1800)
            ngx.say("sent: ", done, ", processors left: ", next(m.processors) and "some" or "none")
            ngx.say("add after the sweep: ", m:add_entry(conf, "again"))
        }
    }
--- response_body
sent: 1, processors left: none
add after the sweep: false
--- error_log
removing batch processor stale object, conf:



=== TEST 8: apisix.timers runs registered jobs every second until unregistered
--- config
    location /t {
        content_by_lua_block {
            local timers = require("apisix.timers")
            local runs = 0
            timers.register_timer("fixture-job", function() runs = runs + 1 end)
            local deadline = ngx.now() + 5
            while runs < 2 and ngx.now() < deadline do
                ngx.sleep(0.05)
            end
            timers.unregister_timer("fixture-job")
            local seen = runs
            ngx.say("ran twice: ", seen >= 2)
            -- a round already under way may still finish; after that no more runs
            ngx.sleep(1.2)
            local settled = runs
            ngx.sleep(1.2)
            ngx.say("stopped: ", runs == settled)
        }
    }
--- timeout: 10
--- response_body
ran twice: true
stopped: true
--- error_log
run timer[fixture-job]



=== TEST 9: rfc5424 encodes PRI, version, UTC time with milliseconds, '-' for what is missing
--- config
    location /t {
        content_by_lua_block {
            local rfc5424 = require("apisix.utils.rfc5424")
            local m = rfc5424.encode("SYSLOG", "INFO", "host-a", "apisix", 42, "{\"a\":1}")
            ngx.print((m:gsub("%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ", "TIME")))
            m = rfc5424.encode("LOCAL7", "EMEGR", nil, nil, 1, "x",
                { { name = "project", value = "p" }, { name = "logstore", value = "s" } })
            ngx.print((m:gsub("%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ", "TIME")))
        }
    }
--- response_body
<46>1 TIME host-a apisix 42 - - {"a":1}
<184>1 TIME - - 1 - [logservice project="p" logstore="s"] x
