# moongate's stand-in for Test::Nginx::Socket::Lua::Stream: see Moongate/TestNginx.pm.
package Test::Nginx::Socket::Lua::Stream;
use strict;
use warnings;
use Moongate::TestNginx;

sub import {
    my $class = shift;
    Moongate::TestNginx::handle_import_args(@_);
    Moongate::TestNginx::export_to(scalar caller);
}

1;
