-- apisix.utils.auth: helpers auth plugins share.
local _M = {}

-- Under multi-auth an auth plugin hands its raw error back instead of answering: multi-auth
-- runs each configured auth plugin's rewrite itself, with ctx._plugin_name set to its own name.
function _M.is_running_under_multi_auth(ctx)
    return ctx._plugin_name == "multi-auth"
end

return _M
