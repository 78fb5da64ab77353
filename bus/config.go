package bus

import "github.com/spa-rl/spa/config"

// OptionsFrom maps the configuration's bus section onto connection options; name is the client
// name the server shows.
func OptionsFrom(c config.Bus, name string) Options {
	return Options{
		URL: c.URL, Name: name, User: c.User, Password: c.Password, Token: c.Token,
		CredsFile: c.CredsFile, NKeyFile: c.NKeyFile, TLSCA: c.TLSCA, TLSCert: c.TLSCert, TLSKey: c.TLSKey,
		Timeout: c.Timeout, StoreDir: c.StoreDir, Listen: c.Listen,
	}
}
