//! `require("ngx.balancer")`: what a plugin's `balancer(conf, ctx)` phase uses to steer the
//! current upstream try, with lua-resty-core's API: `set_current_peer`, `set_more_tries`,
//! `get_last_failure`, `set_timeouts`. They act on the node choice the proxy made for this try
//! (`RequestCtx::balancer`), which the proxy reads back when the phase ends. Outside the
//! balancer phase they answer `nil, "API disabled in the current context"`. The rest of
//! lua-resty-core's module raises an error naming what moongate does not support.

use std::net::{IpAddr, SocketAddr};

use mlua::{Lua, Table};

use crate::lua::raw::{self, Args, Ret, Rets, Ty};
use crate::lua::request;
use crate::plugin::RequestCtx;
use crate::plugin::ctx::BalancerCtx;

const DISABLED: &str = "API disabled in the current context";

/// Runs `f` on the node choice of the current try, or answers `nil, err` outside the
/// balancer phase.
fn with_choice(api: &str, f: impl FnOnce(&mut BalancerCtx) -> Rets) -> Result<Rets, String> {
    request::with_raw(api, |r: &mut RequestCtx| match r.balancer.as_mut() {
        Some(b) if r.ngx_phase == "balancer" => f(b),
        _ => Rets::two(Ret::Nil, Ret::Static(DISABLED)),
    })
}

fn fail(msg: String) -> Rets {
    Rets::two(Ret::Nil, Ret::Str(msg.into_bytes()))
}

crate::raw_fn!(set_current_peer, |args| {
    // (addr, port): an IP address, as nginx resolves no names in its balancer phase.
    let Some(addr) = args.str(1) else {
        return Err(format!(
            "bad argument #1 to 'set_current_peer' (string expected, got {})",
            args.ty(1).name()
        ));
    };
    let addr = String::from_utf8_lossy(addr).into_owned();
    let port = match args.ty(2) {
        Ty::Number => args.number(2),
        Ty::Nil | Ty::None => None,
        t => {
            return Err(format!(
                "bad argument #2 to 'set_current_peer' (number expected, got {})",
                t.name()
            ));
        }
    };
    let peer = if addr.starts_with("unix:") {
        Err("unix domain socket peers are not supported by moongate".to_string())
    } else {
        match (
            addr.trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>(),
            port,
        ) {
            (Ok(ip), Some(p)) if (1.0..=65535.0).contains(&p) && p.fract() == 0.0 => {
                Ok(SocketAddr::new(ip, p as u16))
            }
            (Ok(_), Some(p)) => Err(format!("invalid port: {p}")),
            // "host:port" in one string.
            (Err(_), None) => addr
                .parse::<SocketAddr>()
                .map_err(|_| format!("no port in upstream \"{addr}\"")),
            (Ok(_), None) => Err(format!("no port in upstream \"{addr}\"")),
            (Err(_), Some(_)) => Err(format!(
                "host must be an IP address, got \"{addr}\": names are not resolved in the balancer phase"
            )),
        }
    };
    with_choice("ngx.balancer.set_current_peer", |b| match peer {
        Ok(p) => {
            b.peer = Some(p);
            Rets::one(Ret::Bool(true))
        }
        Err(e) => fail(e),
    })
});

crate::raw_fn!(set_more_tries, |args| {
    let Some(n) = args.number(1).filter(|n| *n >= 0.0) else {
        return Err(format!(
            "bad argument #1 to 'set_more_tries' (non-negative number expected, got {})",
            args.ty(1).name()
        ));
    };
    with_choice("ngx.balancer.set_more_tries", |b| {
        b.more_tries = Some(n.min(u32::MAX as f64) as u32);
        Rets::one(Ret::Bool(true))
    })
});

crate::raw_fn!(get_last_failure, |_| {
    with_choice("ngx.balancer.get_last_failure", |b| match b.last_failure {
        Some((state, code)) => Rets::two(Ret::Static(state), Ret::Num(code as f64)),
        None => Rets::one(Ret::Nil),
    })
});

crate::raw_fn!(set_timeouts, |args: &Args| {
    let mut t = [None; 3];
    for (i, slot) in t.iter_mut().enumerate() {
        let a = i as i32 + 1;
        match args.ty(a) {
            Ty::Nil | Ty::None => {}
            Ty::Number => {
                let v = args.number(a).unwrap_or(0.0);
                if v <= 0.0 {
                    let which = ["connect", "send", "read"][i];
                    return Ok(fail(format!("bad {which} timeout")));
                }
                *slot = Some(v);
            }
            ty => {
                return Err(format!(
                    "bad argument #{a} to 'set_timeouts' (number expected, got {})",
                    ty.name()
                ));
            }
        }
    }
    with_choice("ngx.balancer.set_timeouts", |b| {
        for (cur, new) in b.timeouts.iter_mut().zip(t) {
            if new.is_some() {
                *cur = new;
            }
        }
        Rets::one(Ret::Bool(true))
    })
});

/// lua-resty-core functions moongate does not have, each raising an error that names it.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "recreate_request",
        "ngx.balancer.recreate_request is not supported by moongate (the request an upstream try sends is built before the balancer phase)",
    ),
    (
        "enable_keepalive",
        "ngx.balancer.enable_keepalive is not supported by moongate (upstream connections are pooled by the proxy)",
    ),
    (
        "set_upstream_tls",
        "ngx.balancer.set_upstream_tls is not supported by moongate",
    ),
    (
        "bind_to_local_addr",
        "ngx.balancer.bind_to_local_addr is not supported by moongate",
    ),
    (
        "get_targets",
        "ngx.balancer.get_targets is not supported by moongate",
    ),
];

/// Installs `require("ngx.balancer")`.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let m = lua.create_table()?;
    m.set(
        "set_current_peer",
        raw::function(lua, set_current_peer, ())?,
    )?;
    m.set("set_more_tries", raw::function(lua, set_more_tries, ())?)?;
    m.set(
        "get_last_failure",
        raw::function(lua, get_last_failure, ())?,
    )?;
    m.set("set_timeouts", raw::function(lua, set_timeouts, ())?)?;
    for (name, msg) in UNSUPPORTED {
        let msg = *msg;
        m.set(
            *name,
            lua.create_function(move |_, _: mlua::MultiValue| -> mlua::Result<()> {
                Err(mlua::Error::runtime(msg))
            })?,
        )?;
    }
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "ngx.balancer",
        lua.create_function(move |_, ()| Ok(m.clone()))?,
    )?;
    Ok(())
}

// `picked()`: the node of the current try (host, port, try number), for the phase runner to
// give `ctx.balancer_ip`, `ctx.balancer_port` and `ctx.picked_server`.
crate::raw_fn!(pub picked, |_| {
    request::with_raw("ngx.balancer", |r| match &r.balancer {
        Some(b) => Rets::three(
            Ret::Str(b.host.clone().into_bytes()),
            Ret::Num(b.port as f64),
            Ret::Num(b.try_no as f64),
        ),
        None => Rets::one(Ret::Nil),
    })
});
