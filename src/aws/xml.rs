//! A small read-only tree of an XML document: what EC2's Query API answers.
//!
//! The whole answer (at most a page of a Describe call: up to a few MB for 1,000 images) is read
//! into a tree once, and the adapters pick the elements they need by name. Tokens come from
//! `xmlparser`, the tokenizer the AWS SDK's own XML support is built on.

use std::borrow::Cow;

/// One element: its local name (namespace prefixes dropped), its text (only for elements without
/// children; entities resolved) and its child elements in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child element named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    /// The text of the first child named `name`; None when there is no such child.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
    /// The element at a path of child names (`["instanceState", "name"]`).
    pub fn at(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |el, name| el.child(name))
    }
    /// The text at a path of child names.
    pub fn text_at(&self, path: &[&str]) -> Option<&str> {
        self.at(path).map(|c| c.text.as_str())
    }
    /// The `item`s of the list element `name` (EC2 wraps every list member in `<item>`); none
    /// when the list is absent.
    pub fn items<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Element> + 'a {
        self.child(name)
            .into_iter()
            .flat_map(|list| list.children.iter().filter(|c| c.name == "item"))
    }
    /// Each `key`/`value` of the `tagSet` list.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.items("tagSet").filter_map(|tag| {
            Some((
                tag.text_of("key")?,
                tag.text_of("value").unwrap_or_default(),
            ))
        })
    }
}

/// Parses a whole document into its root element.
pub fn parse(document: &str) -> Result<Element, String> {
    use xmlparser::{ElementEnd, Token};
    // The open elements, innermost last; the document's root collects the top element.
    let mut open: Vec<Element> = vec![Element::default()];
    for token in xmlparser::Tokenizer::from(document) {
        match token.map_err(|e| format!("unreadable XML: {e}"))? {
            Token::ElementStart { local, .. } => open.push(Element {
                name: local.as_str().to_owned(),
                ..Element::default()
            }),
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Close(..) | ElementEnd::Empty => {
                    let mut done = open.pop().ok_or("unbalanced XML")?;
                    if let ElementEnd::Close(_, name) = end
                        && name.as_str() != done.name
                    {
                        return Err(format!("</{}> closes <{}>", name.as_str(), done.name));
                    }
                    if !done.children.is_empty() {
                        // Only whitespace between child elements: not the element's text.
                        done.text.clear();
                    }
                    open.last_mut().ok_or("unbalanced XML")?.children.push(done);
                }
            },
            // Text outside the root element (there is none in a well-formed answer) is ignored.
            Token::Text { text } if open.len() > 1 => {
                let el = open.last_mut().ok_or("unbalanced XML")?;
                el.text.push_str(&unescape(text.as_str())?);
            }
            Token::Cdata { text, .. } if open.len() > 1 => {
                let el = open.last_mut().ok_or("unbalanced XML")?;
                el.text.push_str(text.as_str());
            }
            _ => {}
        }
    }
    let mut root = open.pop().ok_or("unbalanced XML")?;
    if !open.is_empty() {
        return Err("the XML document ends inside an element".into());
    }
    root.children
        .pop()
        .filter(|_| root.children.is_empty())
        .ok_or_else(|| "the XML document has no single root element".into())
}

/// Resolves XML's five predefined entities and character references.
fn unescape(text: &str) -> Result<Cow<'_, str>, String> {
    if !text.contains('&') {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(';')
            .ok_or_else(|| format!("unterminated entity in {text:?}"))?;
        let entity = &rest[at + 1..at + end];
        let ch = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{entity};"))?
            }
        };
        out.push(ch);
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ec2_answer_reads_as_a_tree() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>
    <imagesSet>
        <item>
            <imageId>ami-1</imageId>
            <description/>
            <name>a &amp; b &#x41;&#66;</name>
            <tagSet><item><key>k</key><value>v</value></item><item><key>only</key></item></tagSet>
        </item>
        <item><imageId>ami-2</imageId></item>
    </imagesSet>
</DescribeImagesResponse>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "DescribeImagesResponse");
        let images: Vec<_> = root.items("imagesSet").collect();
        assert_eq!(images.len(), 2);
        assert_eq!(images[0].text_of("imageId"), Some("ami-1"));
        assert_eq!(images[0].text_of("description"), Some(""));
        assert_eq!(images[0].text_of("name"), Some("a & b AB"));
        assert_eq!(images[1].text_of("name"), None);
        assert_eq!(
            images[0].tags().collect::<Vec<_>>(),
            [("k", "v"), ("only", "")]
        );
        assert_eq!(
            root.text_at(&["imagesSet", "item", "imageId"]),
            Some("ami-1")
        );
        assert!(
            root.text.is_empty(),
            "whitespace between elements is not text"
        );
    }

    #[test]
    fn broken_documents_are_refused() {
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("<a>").is_err());
        assert!(parse("").is_err());
        assert!(parse("<a>&bogus;</a>").is_err());
        assert!(parse("<a/><b/>").is_err());
    }
}
