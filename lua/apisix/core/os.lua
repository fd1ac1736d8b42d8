-- core.os: process-level calls APISIX makes through the C library: `setenv`, `usleep`,
-- `waitpid`.

local ffi = require("ffi")
local type, tostring, error = type, tostring, error

ffi.cdef([[
int setenv(const char *name, const char *value, int overwrite);
int usleep(unsigned int usec);
int waitpid(int pid, int *status, int options);
char *strerror(int errnum);
]])

local C = ffi.C

local _M = {}

local function errmsg()
    return ffi.string(C.strerror(ffi.errno()))
end

-- Sets an environment variable of this process (seen by child processes it starts).
function _M.setenv(name, value)
    if type(name) ~= "string" or (type(value) ~= "string" and type(value) ~= "number") then
        return false, "invalid argument"
    end
    if C.setenv(name, tostring(value), 1) ~= 0 then
        return false, errmsg()
    end
    return true
end

-- Blocks the whole worker thread for `us` microseconds: only for start-up code; requests must
-- use ngx.sleep.
function _M.usleep(us)
    C.usleep(us)
end

local WNOHANG = 1

-- Reaps child `pid` without waiting; returns `true` when it has exited.
function _M.waitpid(pid)
    if type(pid) ~= "number" then
        error("core.os.waitpid: pid must be a number", 2)
    end
    local status = ffi.new("int[1]")
    local r = C.waitpid(pid, status, WNOHANG)
    if r == -1 then
        return nil, errmsg()
    end
    return r == pid, status[0]
end

return _M
