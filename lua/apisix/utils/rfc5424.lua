-- apisix.utils.rfc5424: one syslog message in RFC 5424's format, as syslog and sls-logger
-- send them:
--
--     <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID - STRUCTURED-DATA MSG\n
--
-- PRI is facility * 8 + severity (names below, spelled as APISIX spells them, `EMEGR`
-- included); the timestamp is UTC with milliseconds; a missing hostname or app name is `-`.
-- `structured_data`, a list of `{name, value}`, becomes one `[logservice name="value" …]`
-- element (sls-logger carries its project, logstore and keys there), else `-`.

local log_util = require("apisix.utils.log-util")
local string_format, concat = string.format, table.concat
local ipairs = ipairs

local FACILITY = {
    KERN = 0, USER = 1, MAIL = 2, DAEMON = 3, AUTH = 4, SYSLOG = 5, LPR = 6, NEWS = 7,
    UUCP = 8, CRON = 9, AUTHPRIV = 10, FTP = 11,
    LOCAL0 = 16, LOCAL1 = 17, LOCAL2 = 18, LOCAL3 = 19,
    LOCAL4 = 20, LOCAL5 = 21, LOCAL6 = 22, LOCAL7 = 23,
}

local SEVERITY = {
    EMEGR = 0, ALERT = 1, CRIT = 2, ERR = 3, WARNING = 4, NOTICE = 5, INFO = 6, DEBUG = 7,
}

local _M = { version = 0.1 }

local function structured(params)
    if not params then
        return "-"
    end
    local parts = { "[logservice" }
    for _, p in ipairs(params) do
        parts[#parts + 1] = " " .. p.name .. "=\"" .. p.value .. "\""
    end
    parts[#parts + 1] = "]"
    return concat(parts)
end

function _M.encode(facility, severity, hostname, appname, pid, msg, structured_data)
    local pri = FACILITY[facility] * 8 + SEVERITY[severity]
    return string_format("<%d>1 %s %s %s %d - %s %s\n", pri,
        log_util.get_rfc3339_zulu_timestamp(), hostname or "-", appname or "-", pid,
        structured(structured_data), msg)
end

return _M
