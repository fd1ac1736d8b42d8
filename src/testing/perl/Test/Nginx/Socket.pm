# moongate's stand-in for Test::Nginx::Socket: see Moongate/TestNginx.pm.
package Test::Nginx::Socket;
use strict;
use warnings;
use Moongate::TestNginx;

sub import {
    my $class = shift;
    Moongate::TestNginx::handle_import_args(@_);
    Moongate::TestNginx::export_to(scalar caller);
}

1;
