BEGIN TRANSACTION;
CREATE TABLE attachments (
	sha256 VARCHAR(64) NOT NULL, 
	mime VARCHAR(100) NOT NULL, 
	size INTEGER NOT NULL, 
	data BLOB NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (sha256)
);
INSERT INTO "attachments" VALUES('fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108','image/png',64,X'000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F202122232425262728292A2B2C2D2E2F303132333435363738393A3B3C3D3E3F','2026-11-23 17:31:50.809953');
INSERT INTO "attachments" VALUES('075f8e3f22fcb592f1c27b086375ceeaacc767bd43a4583cffd38685d3a1d9bb','image/png',9,X'89504E472066616B65','2026-11-23 17:31:50.818986');
CREATE TABLE conversations (
	id VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	last_seq INTEGER NOT NULL, 
	seq_reserved INTEGER NOT NULL, 
	owner VARCHAR(100) NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "conversations" VALUES('c-alice','2026-11-23 17:31:50.801508','2026-11-23 17:31:50.814092',20,0,'alice');
INSERT INTO "conversations" VALUES('c-bob','2026-11-23 17:31:50.802663','2026-11-23 17:31:50.817505',0,0,'bob');
INSERT INTO "conversations" VALUES('7a36b1611012491cb364cf5ef7d60003','2026-11-23 17:31:50.818349','2026-11-23 17:31:50.819024',0,0,'bob');
CREATE TABLE image_descriptions (
	sha256 VARCHAR(64) NOT NULL, 
	describer VARCHAR(200) NOT NULL, 
	text TEXT, 
	PRIMARY KEY (sha256, describer), 
	FOREIGN KEY(sha256) REFERENCES attachments (sha256)
);
INSERT INTO "image_descriptions" VALUES('fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108','ocr','HELLO');
INSERT INTO "image_descriptions" VALUES('fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108','labels',NULL);
CREATE TABLE image_features (
	sha256 VARCHAR(64) NOT NULL, 
	encoder_id VARCHAR(200) NOT NULL, 
	dim INTEGER NOT NULL, 
	vector BLOB NOT NULL, 
	PRIMARY KEY (sha256, encoder_id), 
	FOREIGN KEY(sha256) REFERENCES attachments (sha256)
);
INSERT INTO "image_features" VALUES('fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108','clip-test',6,X'000102030001020300010203000102030001020300010203');
CREATE TABLE parts (
	id INTEGER NOT NULL, 
	turn_pk INTEGER NOT NULL, 
	position INTEGER NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	text TEXT, 
	attachment_sha256 VARCHAR(64), 
	PRIMARY KEY (id), 
	FOREIGN KEY(turn_pk) REFERENCES turns (pk), 
	FOREIGN KEY(attachment_sha256) REFERENCES attachments (sha256)
);
INSERT INTO "parts" VALUES(1,1,0,'text','what is in this picture?',NULL);
INSERT INTO "parts" VALUES(2,3,0,'text','and this one?',NULL);
INSERT INTO "parts" VALUES(3,3,1,'image',NULL,'fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108');
INSERT INTO "parts" VALUES(4,2,0,'text','A cat on a sofa. ünïcödé ✓',NULL);
INSERT INTO "parts" VALUES(5,4,0,'tool_call','{"call_id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}, "needs_confirmation": false}',NULL);
INSERT INTO "parts" VALUES(6,4,1,'tool_result','{"call_id": "c1", "name": "add", "status": "ok", "result": 5, "error": null}',NULL);
INSERT INTO "parts" VALUES(7,4,2,'text','It is 5.',NULL);
INSERT INTO "parts" VALUES(8,5,0,'text','count',NULL);
INSERT INTO "parts" VALUES(9,7,0,'image_request','a red square',NULL);
INSERT INTO "parts" VALUES(10,8,0,'image',NULL,'075f8e3f22fcb592f1c27b086375ceeaacc767bd43a4583cffd38685d3a1d9bb');
CREATE TABLE reminders (
	id VARCHAR(64) NOT NULL, 
	owner VARCHAR(100) NOT NULL, 
	conversation_id VARCHAR(64), 
	kind VARCHAR(16) NOT NULL, 
	text TEXT NOT NULL, 
	due_at DATETIME NOT NULL, 
	timezone VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	fired_at DATETIME, 
	cancelled_at DATETIME, 
	PRIMARY KEY (id)
);
INSERT INTO "reminders" VALUES('10e4b828546a424d81d3619bc568a215','alice','c-alice','reminder','water the plants','2031-01-02 09:30:00.000000','Europe/Berlin','2026-11-23 17:31:50.819640',NULL,NULL);
INSERT INTO "reminders" VALUES('aa285c81bad345dd8f16e0629dd1af98','bob',NULL,'timer','tea','2026-01-01 08:00:00.000000','UTC','2026-11-23 17:31:50.821630','2026-01-01 08:00:05.000000',NULL);
CREATE TABLE turns (
	pk INTEGER NOT NULL, 
	id VARCHAR(64) NOT NULL, 
	conversation_id VARCHAR(64) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	reply_to VARCHAR(64), 
	created_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	error TEXT, 
	usage JSON, 
	PRIMARY KEY (pk), 
	UNIQUE (id), 
	FOREIGN KEY(conversation_id) REFERENCES conversations (id)
);
INSERT INTO "turns" VALUES(1,'bc09e63b4f41400483597603ffb985d1','c-alice','user','completed',NULL,'2026-11-23 17:31:50.803173','2026-11-23 17:31:50.803173',NULL,'null');
INSERT INTO "turns" VALUES(2,'020be6b910334e3c805756a353092985','c-alice','assistant','completed','bc09e63b4f41400483597603ffb985d1','2026-11-23 17:31:50.806035','2026-11-23 17:31:50.811123',NULL,'{"completion_tokens": 7}');
INSERT INTO "turns" VALUES(3,'13456bf54f9c4531a12b128a734b0b3d','c-alice','user','completed',NULL,'2026-11-23 17:31:50.810291','2026-11-23 17:31:50.810291',NULL,'null');
INSERT INTO "turns" VALUES(4,'ef425cb6c8924a78aa7e00ebfe9a1bdc','c-alice','assistant','completed','13456bf54f9c4531a12b128a734b0b3d','2026-11-23 17:31:50.813125','2026-11-23 17:31:50.814092',NULL,'null');
INSERT INTO "turns" VALUES(5,'eed813f85e5943949e4604eae13ff131','c-bob','user','completed',NULL,'2026-11-23 17:31:50.817342','2026-11-23 17:31:50.817342',NULL,'null');
INSERT INTO "turns" VALUES(6,'fd92b0d8a0564593a87e46300cb79b5b','c-bob','assistant','in_progress','eed813f85e5943949e4604eae13ff131','2026-11-23 17:31:50.817505',NULL,NULL,'null');
INSERT INTO "turns" VALUES(7,'a5d688861e1d41609b8e19a77b6b4f8f','7a36b1611012491cb364cf5ef7d60003','user','completed',NULL,'2026-11-23 17:31:50.818830','2026-11-23 17:31:50.818830',NULL,'null');
INSERT INTO "turns" VALUES(8,'e21f0efa3a1443b79650d279b7778c88','7a36b1611012491cb364cf5ef7d60003','assistant','completed','a5d688861e1d41609b8e19a77b6b4f8f','2026-11-23 17:31:50.819024','2026-11-23 17:31:50.819024',NULL,'null');
CREATE INDEX ix_conversations_owner ON conversations (owner);
CREATE INDEX ix_reminders_owner ON reminders (owner);
CREATE INDEX ix_reminders_active_due ON reminders (fired_at, cancelled_at, due_at);
CREATE INDEX ix_turns_conversation_id ON turns (conversation_id);
CREATE INDEX ix_parts_turn_pk ON parts (turn_pk);
COMMIT;
