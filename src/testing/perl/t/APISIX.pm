# moongate's stand-in for APISIX's t::APISIX: the Test::Nginx entry points plus the block
# defaults APISIX's harness applies, written for moongate's runner (see Moongate/TestNginx.pm).
# Everything that generates nginx.conf in APISIX's harness is the Rust runner's job here.
package t::APISIX;
use strict;
use warnings;
use Moongate::TestNginx;

$Moongate::TestNginx::Settings{apisix} = JSON::PP::true;
Moongate::TestNginx::repeat_each(1);
Moongate::TestNginx::log_level('info');
Moongate::TestNginx::no_shuffle();
Moongate::TestNginx::no_root_location();
Moongate::TestNginx::master_on();

# What APISIX's own files read through these helpers.
sub read_file {
    my ($rel) = @_;
    my $home = $ENV{APISIX_HOME} // '.';
    open my $in, '<', "$home/$rel" or die "cannot open $rel for reading: $!";
    local $/;
    my $data = <$in>;
    close $in;
    return $data;
}

# Runs after every file-level preprocessor (Test::Nginx runs the last added first).
Moongate::TestNginx::add_block_preprocessor(sub {
    my ($block) = @_;
    # APISIX's harness gives every request 5 seconds unless the block says otherwise.
    $block->set_value('timeout', $block->timeout // 5);
    # A block that states nothing about the error log asserts there is no [error] line.
    if (!defined $block->error_log && !defined $block->no_error_log
        && !defined $block->grep_error_log && !defined $block->ignore_error_log) {
        $block->set_value('no_error_log', "[error]");
    }
});

sub import {
    my $class = shift;
    Moongate::TestNginx::handle_import_args(@_);
    Moongate::TestNginx::export_to(scalar caller);
}

1;
