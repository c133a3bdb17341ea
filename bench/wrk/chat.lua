-- wrk script for the shopchat benchmark.
--
--   wrk -t T -c C -d D -s bench/wrk/chat.lua http://127.0.0.1:PORT -- SCENARIO CLIENTS.tsv SYSTEM_KEY [BASE]
--
-- SCENARIO: conversations | messages | get-new-messages | insert-message | create-conversation.
-- CLIENTS.tsv: rows "token_id user_id conversation_id last_message_id product_id" (bench/sql/clients.sql).
-- Every request is built once in init() (wrk.format) and replayed round-robin, so the script costs
-- next to nothing per request; each thread starts at a different row. Each row is one simulated
-- app user (its own token), so the token cache sees as many distinct tokens as there are rows.
--
-- done() prints one JSON line (prefix "BENCH_JSON ") that run.sh collects: requests, duration,
-- errors by kind (status = answers other than 2xx/3xx), latency percentiles in microseconds.

local scenario, base, system_key
local requests = {}
local next_index = 1
local thread_count = 0

local function load_rows(path)
    local rows = {}
    for line in io.lines(path) do
        local t, u, c, l, p = line:match("^(%d+)\t(%d+)\t(%d+)\t(%d+)\t(%d+)")
        if t then
            rows[#rows + 1] = { token = t, user = u, conv = c, last = l, product = p }
        end
    end
    return rows
end

local function build(row, n)
    local headers = {
        ["Accept"] = "application/json",
        ["System-Key"] = system_key,
        ["Authorization"] = "Bearer " .. row.token .. "|bench-" .. row.token,
    }
    if scenario == "conversations" then
        return wrk.format("GET", base .. "/conversations", headers)
    elseif scenario == "messages" then
        return wrk.format("GET", base .. "/messages/" .. row.conv, headers)
    elseif scenario == "get-new-messages" then
        return wrk.format("GET", base .. "/get-new-messages/" .. row.conv .. "/" .. row.last, headers)
    elseif scenario == "insert-message" then
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        local body = "conversation_id=" .. row.conv .. "&user_id=" .. row.user
            .. "&message=Bench+message+from+user+" .. row.user
        return wrk.format("POST", base .. "/insert-message", headers, body)
    elseif scenario == "create-conversation" then
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        -- Three titles per (customer, product): the first call of each creates a conversation,
        -- a repeat (after the whole list was replayed) reuses it (D6).
        local body = "product_id=" .. row.product .. "&title=Bench+question+" .. (n % 3)
            .. "&message=Is+product+" .. row.product .. "+in+stock%3F"
        return wrk.format("POST", base .. "/create-conversation", headers, body)
    end
    error("unknown scenario " .. tostring(scenario))
end

function setup(thread)
    thread_count = thread_count + 1
    thread:set("thread_id", thread_count)
end

function init(args)
    scenario = args[1]
    local path = args[2]
    system_key = args[3] or "bench-system-key"
    base = args[4] or "/api/v2/chat"
    local rows = load_rows(path)
    if #rows == 0 then
        error("no client rows in " .. tostring(path))
    end
    for i, row in ipairs(rows) do
        requests[i] = build(row, i)
    end
    -- Spread the threads over the list (thread_id is 1-based, set by setup()).
    local id = tonumber(thread_id) or 1
    next_index = 1 + ((id - 1) * 7919) % #requests
end

function request()
    local r = requests[next_index]
    next_index = next_index + 1
    if next_index > #requests then
        next_index = 1
    end
    return r
end

function done(summary, latency, requests_)
    local e = summary.errors
    io.write(string.format(
        'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
        '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
