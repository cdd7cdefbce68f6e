//! Sets the version variables `gst::plugin_define!` reads and links libnice, whose C API
//! restricts webrtcbin's ICE agent to the local addresses a call may use.

fn main() {
    gst_plugin_version_helper::info();
    if let Err(e) = pkg_config::Config::new().atleast_version("0.1.16").probe("nice") {
        panic!(
            "libnice (pkg-config `nice`) is needed to build gst-plugin-wilddog: {e}; install libnice-dev"
        );
    }
}
