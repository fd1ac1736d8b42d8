//! `ngx.location.capture` and `ngx.location.capture_multi`: subrequests, implemented in Lua by
//! `moongate.subrequest` (loaded on the first call, so VMs that never make one never load it).

use mlua::{Lua, Table};

const LOCATION: &str = r#"
local impl
local function load()
    if not impl then
        impl = require("moongate.subrequest")
    end
    return impl
end
return {
    capture = function(...) return load().capture(...) end,
    capture_multi = function(...) return load().capture_multi(...) end,
}
"#;

pub fn register(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let location: Table = lua.load(LOCATION).set_name("=ngx.location").eval()?;
    ngx.set("location", location)
}
