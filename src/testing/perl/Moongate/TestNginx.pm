# moongate's own stand-in for the Test::Nginx entry points a .t prologue calls.
#
# `moongate test` runs a .t file as `perl -I<these modules> FILE`: the prologue really runs
# (preprocessors included), then `run_tests` parses the blocks after __DATA__, applies the
# section filters (eval, chomp ...), runs the block preprocessors and writes every block as
# JSON to the file named by $ENV{MOONGATE_TEST_JSON}. The Rust runner does the rest: it starts
# the gateway, sends the requests and checks the answers. Nothing here talks to a server.
package Moongate::TestNginx;

use strict;
use warnings;
use JSON::PP ();
use re qw(regexp_pattern is_regexp);
use Scalar::Util qw(blessed reftype);
use MIME::Base64 ();

our @EXPORT_FUNCS = qw(
    repeat_each no_long_string no_shuffle no_root_location log_level worker_connections
    master_on master_off workers add_block_preprocessor add_cleanup_handler
    add_test_cleanup_handler plan run_tests blocks html_dir server_root server_port
    server_name use_hup env_to_nginx check_accum_error_log no_diff no_check_leak
    bail_out shuffle_tests no_nginx_manager master_process_enabled config_preamble
    is_running skip_all_if_not log_level_from_env filters
);

our %Settings = (
    repeat_each    => 1,
    no_shuffle     => JSON::PP::false,
    log_level      => undef,
    workers        => 1,
    master_on      => JSON::PP::false,
    skip_all       => undef,
    no_root_location => JSON::PP::false,
);
our @Preprocessors;
our $Ran = 0;

# Exports the entry points (and Test::More's) into the caller of `use`.
sub export_to {
    my ($pkg) = @_;
    no strict 'refs';
    for my $name (@EXPORT_FUNCS) {
        *{"${pkg}::$name"} = \&{"Moongate::TestNginx::$name"};
    }
    eval "package $pkg; use Test::More import => [qw(is isnt ok like unlike is_deeply diag note pass fail)]; 1"
        or die $@;
}

sub handle_import_args {
    my @args = @_;
    while (@args) {
        my $a = shift @args;
        next unless defined $a;
        if ($a eq 'no_plan' || $a eq '-Base' || $a eq '-base') {
            next;
        } elsif ($a eq 'tests') {
            shift @args;
        } elsif ($a eq 'skip_all') {
            $Settings{skip_all} = shift(@args) // 'skip_all';
        }
    }
}

sub repeat_each { $Settings{repeat_each} = $_[0] if @_; $Settings{repeat_each} }
sub no_long_string { }
sub no_diff { }
sub no_check_leak { }
sub no_nginx_manager { }
sub use_hup { $Settings{use_hup} = JSON::PP::true }
sub env_to_nginx { }
sub check_accum_error_log { }
sub shuffle_tests { }
sub is_running { 0 }
sub config_preamble { }
sub filters { }
sub no_shuffle { $Settings{no_shuffle} = JSON::PP::true }
sub no_root_location { $Settings{no_root_location} = JSON::PP::true }
sub log_level { $Settings{log_level} = $_[0] if @_; $Settings{log_level} }
sub log_level_from_env { }
sub worker_connections { }
sub master_on { $Settings{master_on} = JSON::PP::true }
sub master_off { $Settings{master_on} = JSON::PP::false }
sub master_process_enabled { $Settings{master_on} = $_[0] ? JSON::PP::true : JSON::PP::false if @_ }
sub workers { $Settings{workers} = $_[0] if @_; $Settings{workers} }
sub html_dir { $ENV{TEST_NGINX_HTML_DIR} }
sub server_root { $ENV{MOONGATE_TEST_SERVROOT} }
sub server_port { $ENV{TEST_NGINX_SERVER_PORT} }
sub server_name { 'localhost' }
sub bail_out { die "bail out: @_\n" }
sub skip_all_if_not { }

# Test::Nginx runs the preprocessor added last first (it unshifts), so a file's own
# preprocessor runs before the one t::APISIX adds in its module body.
sub add_block_preprocessor { unshift @Preprocessors, $_[0] }
sub add_cleanup_handler { }
sub add_test_cleanup_handler { }

sub plan {
    my @args = @_;
    if (@args && $args[0] eq 'skip_all') {
        $Settings{skip_all} = $args[1] // 'skip_all';
        write_json([]);
        exit 0;
    }
}

sub read_data {
    my $file = $0;
    open my $fh, '<', $file or die "cannot read $file: $!\n";
    local $/;
    my $text = <$fh>;
    close $fh;
    my $at = index($text, "\n__DATA__\n");
    die "$file: no __DATA__ section\n" if $at < 0;
    my $before = substr($text, 0, $at + 1);
    my $line = ($before =~ tr/\n//) + 2;
    return (substr($text, $at + length("\n__DATA__\n")), $line);
}

my %Filters = (
    chomp => sub { my $v = shift; chomp $v; $v },
    chop  => sub { my $v = shift; chop $v; $v },
    trim  => sub { my $v = shift; $v =~ s/\A([ \t]*\n)+//; $v =~ s/(?<=\n)\s*\z//; $v },
    norm  => sub { my $v = shift; $v =~ s/\r\n/\n/g; $v },
    base64_decode => sub { MIME::Base64::decode_base64(shift) },
    base64_encode => sub { MIME::Base64::encode_base64(shift) },
);

sub eval_perl {
    my ($code, $where) = @_;
    my @values = eval "package main; no strict; no warnings;\n#line 1 \"$where\"\n$code";
    die "$where: eval filter failed: $@" if $@;
    return @values == 1 ? $values[0] : \@values;
}

package Moongate::TestNginx::Block;

our $AUTOLOAD;

sub new {
    my ($class, %args) = @_;
    return bless { %args, values => {}, order => [] }, $class;
}

sub name { $_[0]{name} }
sub description { $_[0]{description} }
sub seq_num { $_[0]{seq_num} }
sub blocks_object { undef }

sub set_value {
    my ($self, $key, @rest) = @_;
    if (!@rest || !defined $rest[0]) {
        delete $self->{values}{$key};
        return;
    }
    push @{ $self->{order} }, $key unless exists $self->{values}{$key};
    $self->{values}{$key} = @rest == 1 ? $rest[0] : [@rest];
}

sub AUTOLOAD {
    my $self = shift;
    my $name = $AUTOLOAD;
    $name =~ s/.*:://;
    return if $name eq 'DESTROY';
    my $v = $self->{values}{$name};
    return $v unless wantarray;
    return () unless defined $v;
    return ref $v eq 'ARRAY' ? @$v : ($v);
}

package Moongate::TestNginx;

sub parse_blocks {
    my ($data, $first_line) = @_;
    my @blocks;
    my @lines = split /(?<=\n)/, $data;
    my $lineno = $first_line - 1;
    my $cur;
    my $sec;
    my $finish_section = sub {
        return unless $cur && $sec;
        push @{ $cur->{raw} }, $sec;
        $sec = undef;
    };
    for my $l (@lines) {
        $lineno++;
        if ($l =~ /^===\s*(.*?)\s*$/) {
            $finish_section->();
            $cur = { name => $1, line => $lineno, raw => [] };
            push @blocks, $cur;
            next;
        }
        next unless $cur;
        if ($l =~ /^---\s+(\w+)\s*:\s*(.*?)\s*$/) {
            $finish_section->();
            $sec = { name => $1, text => $2, inline => 1, filters => [], line => $lineno };
            next;
        }
        if ($l =~ /^---\s+(\w+)((?:[ \t]+\w+)*)[ \t]*$/) {
            $finish_section->();
            my ($name, $filters) = ($1, $2);
            $filters =~ s/^\s+//;
            my @f = length $filters ? split(/\s+/, $filters) : ();
            $sec = { name => $name, text => '', inline => 0, filters => \@f, line => $lineno };
            next;
        }
        if ($sec) {
            $sec->{text} .= $l;
        }
    }
    $finish_section->();
    return @blocks;
}

sub build_block {
    my ($raw, $seq, $file) = @_;
    my $block = Moongate::TestNginx::Block->new(name => $raw->{name}, description => $raw->{name},
        seq_num => $seq, line => $raw->{line});
    for my $sec (@{ $raw->{raw} }) {
        my $name = $sec->{name};
        my $v = $sec->{text};
        if (!$sec->{inline}) {
            $v = $Filters{norm}->($v);
            $v = $Filters{trim}->($v);
        }
        for my $f (@{ $sec->{filters} }) {
            if ($f eq 'eval') {
                $v = eval_perl($v, "$file line $sec->{line} ($name)");
            } elsif (my $fn = $Filters{$f}) {
                $v = ref $v eq 'ARRAY' ? [map { $fn->($_) } @$v] : $fn->($v);
            } else {
                die "$file line $sec->{line}: section '$name' uses the filter '$f', which moongate's runner does not support\n";
            }
        }
        $block->set_value($name, $v);
    }
    return $block;
}

my @RawBlocks;
my @Blocks;

sub blocks {
    load_blocks() unless @Blocks;
    return @Blocks;
}

sub load_blocks {
    my ($data, $line) = read_data();
    @RawBlocks = parse_blocks($data, $line);
    my $seq = 0;
    @Blocks = map { build_block($_, ++$seq, $0) } @RawBlocks;
}

# `$TEST_NGINX_*` in a section's text becomes the environment value, as Test::Nginx expands it.
sub expand_env {
    my ($v) = @_;
    return $v unless defined $v && !ref $v;
    $v =~ s/\$(TEST_NGINX_[_A-Z0-9]+)/defined $ENV{$1} ? $ENV{$1} : die "environment variable \$$1 is not set\n"/ge;
    return $v;
}

sub to_json_value {
    my ($v) = @_;
    return undef unless defined $v;
    if (is_regexp($v)) {
        my ($pat, $mods) = regexp_pattern($v);
        return { regex => $pat, flags => $mods };
    }
    if (ref $v eq 'ARRAY') {
        return [map { to_json_value($_) } @$v];
    }
    if (ref $v eq 'CODE') {
        return { unsupported => 'a Perl code reference' };
    }
    if (ref $v eq 'HASH') {
        return { unsupported => 'a Perl hash' };
    }
    if (ref $v) {
        return "$v";
    }
    return expand_env("$v");
}

sub write_json {
    my ($blocks) = @_;
    my @out;
    for my $b (@$blocks) {
        my %sections;
        my @order;
        for my $k (@{ $b->{order} }) {
            next unless exists $b->{values}{$k};
            $sections{$k} = to_json_value($b->{values}{$k});
            push @order, $k;
        }
        push @out, {
            seq => $b->{seq_num}, name => $b->{name}, line => $b->{line},
            sections => \%sections, order => \@order,
        };
    }
    # Test::Nginx restarts nginx before every block unless the file asks for HUP reloads
    # (which keep shared memory): the runner needs to know which.
    $Settings{use_hup} = JSON::PP::true if $ENV{TEST_NGINX_USE_HUP};
    $Settings{use_hup} //= JSON::PP::false;
    # The environment as the prologue left it (a `BEGIN { $ENV{X} = ... }` is how .t files
    # hand variables to nginx): the runner passes what changed on to the gateway.
    my $doc = { settings => \%Settings, blocks => \@out, env => { map { defined $ENV{$_} ? ($_ => "$ENV{$_}") : () } keys %ENV } };
    my $path = $ENV{MOONGATE_TEST_JSON} or die "MOONGATE_TEST_JSON is not set: run this file with `moongate test`\n";
    open my $fh, '>', $path or die "cannot write $path: $!\n";
    print $fh JSON::PP->new->canonical->allow_nonref->encode($doc);
    close $fh;
}

sub run_tests {
    return if $Ran++;
    load_blocks() unless @Blocks;
    for my $b (@Blocks) {
        for my $pre (@Preprocessors) {
            local $_ = $b;
            $pre->($b);
        }
        # `--- skip_eval: N: EXPR`: the block is skipped when the Perl expression is true.
        if (defined(my $cond = $b->{values}{skip_eval})) {
            my ($expr) = $cond =~ /^\s*\d+\s*:\s*(.*)$/s;
            $expr //= $cond;
            my $skip = eval "package main; no strict; $expr";
            die "$0: skip_eval of $b->{name} failed: $@" if $@;
            $b->set_value('SKIP', "skip_eval: $expr") if $skip;
            $b->set_value('skip_eval');
        }
    }
    write_json(\@Blocks);
}

1;
