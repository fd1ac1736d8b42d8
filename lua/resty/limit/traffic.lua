-- resty.limit.traffic: runs several resty.limit.* limiters as one (the API of
-- lua-resty-limit-traffic's resty.limit.traffic, moongate's own implementation).
--
-- combine(limiters, keys, states?) lets a request through only when every limiter would, and
-- only then records it in all of them, so a request one limiter rejects uses no quota of the
-- others. The delay is the largest one asked for; `states[i]` gets the second value limiter
-- i returned (excess, in-flight count, consumed count …).

local _M = { _VERSION = "1.2.0" }

local function give_back(limiters, keys, upto)
    for j = 1, upto do
        local ok, err = limiters[j]:uncommit(keys[j])
        if not ok and err then
            ngx.log(ngx.WARN, "failed to uncommit the key ", keys[j], ": ", err)
        end
    end
end

function _M.combine(limiters, keys, states)
    local n = #limiters

    -- 1. ask every limiter without recording anything
    for i = 1, n do
        local delay, err = limiters[i]:incoming(keys[i], false)
        if not delay then
            return nil, err
        end
    end

    -- 2. record in all; a limiter that changed its mind meanwhile (another request got
    --    there first) undoes what was recorded
    local max_delay = 0
    for i = 1, n do
        local delay, state = limiters[i]:incoming(keys[i], true)
        if not delay then
            give_back(limiters, keys, i - 1)
            return nil, state
        end
        if states then
            states[i] = state
        end
        if delay > max_delay then
            max_delay = delay
        end
    end
    return max_delay
end

return _M
